"""Configuration of the ``segmentation`` stage (the ``segmentation:`` section of params.yaml)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from medsec.attacks.config import Epsilon
from medsec.config_base import StrictModel


class SegAttackConfig(StrictModel):
    """One attack of the stage.

    ``kind``: ``untargeted`` (maximise pixel CE to the true mask), ``erase`` (target = all
    background, on test images with a lesion) or ``inject`` (target = a lesion mask of another
    test image, on images without a lesion). ``method``: ``pgd`` or ``fgsm``. ``eps``/``alpha``
    in pixel units (strings like ``8/255`` allowed; ``alpha`` defaults to eps/8).
    ``region_margin``: None perturbs the whole image; k >= 0 restricts the perturbation to the
    lesion (the true one; the target one for inject) grown by k pixels. ``scale`` > 1: the
    multi-scale variant - one perturbation value per block of scale x scale pixels (coarse,
    low-frequency changes; the image side must be divisible by it).
    """

    name: str
    kind: Literal["untargeted", "erase", "inject"] = "untargeted"
    method: Literal["pgd", "fgsm"] = "pgd"
    norm: Literal["linf", "l2"] = "linf"
    eps: Epsilon = Field(default=8 / 255, gt=0.0)
    alpha: Epsilon | None = Field(default=None, gt=0.0)
    steps: int = Field(default=20, gt=0, le=1000)
    region_margin: int | None = Field(default=None, ge=0)
    scale: int = Field(default=1, ge=1, le=64)


class SegAdversarialTraining(StrictModel):
    """PGD adversarial training of a second segmenter (Madry et al. with the dense loss):
    every training batch is replaced by SegPGD examples (L-inf ``eps``, ``steps`` steps of
    ``alpha``, default ``2.5 * eps / steps``, random start)."""

    eps: Epsilon = Field(default=8 / 255, gt=0.0, le=1.0)
    steps: int = Field(default=3, gt=0, le=100)
    alpha: Epsilon | None = Field(default=None, gt=0.0)

    @property
    def step_size(self) -> float:
        return self.alpha if self.alpha is not None else 2.5 * self.eps / self.steps


def _default_attacks() -> tuple[SegAttackConfig, ...]:
    return (
        SegAttackConfig(name="seg_fgsm", method="fgsm"),
        SegAttackConfig(name="seg_pgd_4", eps=4 / 255, steps=10),
        SegAttackConfig(name="seg_pgd", steps=10),
        SegAttackConfig(name="seg_pgd_16", eps=16 / 255, steps=10),
        SegAttackConfig(name="seg_pgd_16_coarse4", eps=16 / 255, steps=10, scale=4),
        SegAttackConfig(name="seg_pgd_l2", norm="l2", eps=1.0, alpha=0.1),
        SegAttackConfig(name="seg_erase", kind="erase", eps=48 / 255, steps=30),
        SegAttackConfig(name="seg_erase_region", kind="erase", eps=48 / 255, steps=30,
                        region_margin=4),
        SegAttackConfig(name="seg_inject", kind="inject", eps=32 / 255, steps=30),
    )


class SegmentationConfig(StrictModel):
    """The segmentation stage: data, segmenter, training budget and attacks.

    ``data``: ``phantoms`` (the 2D phantom masks of ``dataset``), ``phantoms3d`` (generated
    volumes of side ``volume_size``) or ``folder`` (``folder`` with train/val/test, each with
    images/ and masks/, PNG or NIfTI). ``num_classes``: mask classes incl. background (None:
    one more than the largest mask value); the validation stage fails on mask values outside
    it and warns on images whose foreground exceeds ``max_foreground_fraction``.
    ``adversarial_training`` (optional): also train a PGD-adversarially-trained segmenter and
    run every attack on it too (does the defense help against erase/inject?).
    """

    data: Literal["phantoms", "phantoms3d", "folder"] = "phantoms"
    folder: str | None = None
    volume_size: int = Field(default=16, ge=8, le=128)
    volumes: tuple[int, int, int] = (16, 8, 8)
    num_classes: int | None = Field(default=None, ge=2)
    max_foreground_fraction: float = Field(default=0.5, gt=0.0, le=1.0)
    model: Literal["unet", "segresnet", "attention_unet"] = "unet"
    channels: tuple[int, ...] = (16, 32)
    epochs: int = Field(default=30, gt=0, le=1000)
    batch_size: int = Field(default=16, gt=0)
    lr: float = Field(default=1e-2, gt=0.0, le=10.0)
    max_train: int | None = Field(default=None, gt=0)
    max_eval: int | None = Field(default=None, gt=0)
    n_attack: int = Field(default=48, gt=0)
    lesion_overlap: float = Field(default=0.5, gt=0.0, le=1.0)
    attacks: tuple[SegAttackConfig, ...] = Field(default_factory=_default_attacks)
    adversarial_training: SegAdversarialTraining | None = None
    save_adversarial: bool = True
    n_figure: int = Field(default=4, gt=0, le=16)
    seed: int = 0

    @field_validator("attacks")
    @classmethod
    def _unique(cls, value: tuple[SegAttackConfig, ...]) -> tuple[SegAttackConfig, ...]:
        names = [a.name for a in value]
        if len(set(names)) != len(names):
            raise ValueError(f"attack names must be unique, got {names}")
        return value
