"""Configuration of the DeepFake stage (the ``deepfake:`` section of ``params.yaml``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from medsec.config_base import StrictModel
from medsec.privacy.leakage_config import CanaryAuditConfig


class GanConfig(StrictModel):
    """A class-conditional DCGAN built from MONAI's ``Generator`` and ``Discriminator``.

    ``generator_channels``: widths of the x2 transposed-convolution stages (the image side must
    be divisible by ``2 ** len(generator_channels)``); ``discriminator_channels``: widths of the
    stride-2 convolution stages of the discriminator (GroupNorm, so Opacus can train it).
    """

    latent_dim: int = Field(default=64, ge=2, le=1024)
    generator_channels: tuple[int, ...] = Field(default=(32, 16), min_length=1, max_length=4)
    discriminator_channels: tuple[int, ...] = Field(default=(32, 64, 64), min_length=1,
                                                  max_length=4)
    kernel_size: int = Field(default=3, ge=3, le=7)
    epochs: int = Field(default=20, gt=0, le=1000)
    batch_size: int = Field(default=32, gt=1)
    lr_generator: float = Field(default=5e-4, gt=0.0, le=1.0)
    lr_discriminator: float = Field(default=5e-4, gt=0.0, le=1.0)
    seed: int = 0

    @field_validator("kernel_size")
    @classmethod
    def _odd(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {value}")
        return value

    @field_validator("generator_channels", "discriminator_channels")
    @classmethod
    def _positive(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if min(value) < 8 or any(c % 8 for c in value):
            raise ValueError(f"channels must be positive multiples of 8 (GroupNorm), got {value}")
        return value


class UnseenGanConfig(GanConfig):
    """The second generator, whose fakes the detector never sees in training: by default
    another architecture (smaller latent, 5x5 kernels, other widths) and another seed."""

    latent_dim: int = Field(default=32, ge=2, le=1024)
    generator_channels: tuple[int, ...] = Field(default=(16, 16), min_length=1, max_length=4)
    kernel_size: int = Field(default=5, ge=3, le=7)
    seed: int = 1


class FakeDatasetConfig(StrictModel):
    """The versioned DeepFake dataset: ``n_per_class`` training images per class (and a quarter
    of that for val and test), sampled with ``sample_seed``."""

    n_per_class: int = Field(default=200, gt=0, le=100_000)
    sample_seed: int = 1234


class TamperConfig(StrictModel):
    """CT-GAN / Jekyll-style tampering with a conditional inpainting network (MONAI UNet).

    ``region``: ``lesion`` (dilated lesion masks; data with masks only), ``box`` (a square of
    side ``box_fraction`` x image side in the central area) or ``auto`` (lesion when the data
    has masks). ``evidence_weight`` weighs the attacker's surrogate-classifier loss that makes
    the inpainted region carry the requested diagnosis (0 = pure inpainting);
    ``smoothness_weight`` weighs a total-variation penalty on the change (realism: no
    high-frequency adversarial patterns, blended seams).
    """

    region: Literal["auto", "lesion", "box"] = "auto"
    box_fraction: float = Field(default=0.4, gt=0.05, lt=1.0)
    dilate: int = Field(default=1, ge=0, le=8)
    channels: tuple[int, ...] = Field(default=(16, 32, 64), min_length=2, max_length=4)
    epochs: int = Field(default=10, gt=0, le=1000)
    batch_size: int = Field(default=64, gt=1)
    lr: float = Field(default=1e-3, gt=0.0, le=1.0)
    evidence_weight: float = Field(default=1.0, ge=0.0)
    smoothness_weight: float = Field(default=2.0, ge=0.0)
    surrogate_seed: int = 1000
    n_images: int = Field(default=200, gt=0)


class DetectorConfig(StrictModel):
    """Real-vs-fake and real-vs-tampered detectors (the project's classifier and loop)."""

    epochs: int = Field(default=3, gt=0, le=1000)
    n_train: int | None = Field(default=None, gt=0)


class DPSynthConfig(StrictModel):
    """Differentially private synthetic data: the discriminator trained with DP-SGD (Opacus)
    at each target epsilon; ``epochs`` None uses ``gan.epochs``; ``delta`` None is 1/(10 N).
    ``batch_size`` is the expected (Poisson) batch: DP-SGD prefers larger batches.
    ``accountant`` ``rdp`` (default: fast to calibrate, slightly conservative) or ``prv``
    (tight, slower) or ``gdp``."""

    epsilons: tuple[float, ...] = (8.0,)
    epochs: int | None = Field(default=None, gt=0, le=1000)
    batch_size: int = Field(default=128, gt=1)
    delta: float | None = Field(default=None, gt=0.0, lt=1.0)
    max_grad_norm: float = Field(default=1.0, gt=0.0)
    accountant: Literal["prv", "rdp", "gdp"] = "rdp"

    @field_validator("epsilons")
    @classmethod
    def _positive(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not eps > 0 for eps in value):
            raise ValueError(f"epsilons must be > 0, got {value}")
        return value


class DeepfakeConfig(StrictModel):
    """The DeepFake stage: generate, tamper, detect, DP synthetic data.

    ``unseen_gan`` is a second generator (another architecture and seed) whose fakes the
    detector never sees in training. ``max_train`` caps the real training images the
    generators and detectors use; ``tstr_epochs`` None trains the train-on-synthetic
    classifier for ``train.epochs``; ``knn_k`` is the k of the k-NN precision/recall.
    ``num_threads``: torch intra-op threads for the whole stage (None: ``train.num_threads``,
    else torch's default); its networks are so small that one thread is fastest, and on a
    shared CPU several threads stall each other (measured 2-10x slower).
    ``canary``: one-run DP audit (Steinke et al. 2023) of the DP-GAN's discriminator at each
    epsilon of ``dp.epsilons``, in one extra GAN training with gradient canaries (off by
    default; ``canary.epochs`` None = ``dp.epochs``).
    """

    gan: GanConfig = GanConfig()
    unseen_gan: UnseenGanConfig = UnseenGanConfig()
    max_train: int | None = Field(default=None, gt=0)
    dataset: FakeDatasetConfig = FakeDatasetConfig()
    tamper: TamperConfig = TamperConfig()
    detector: DetectorConfig = DetectorConfig()
    dp: DPSynthConfig = DPSynthConfig()
    tstr_epochs: int | None = Field(default=None, gt=0, le=1000)
    knn_k: int = Field(default=3, gt=0, le=50)
    max_eval: int = Field(default=1000, gt=10)
    num_threads: int | None = Field(default=1, gt=0)
    canary: CanaryAuditConfig = CanaryAuditConfig()

    @field_validator("canary")
    @classmethod
    def _gradient_canaries(cls, value: CanaryAuditConfig) -> CanaryAuditConfig:
        if value.kind != "gradient":
            raise ValueError("kind: the DP-GAN audit inserts gradient canaries into the "
                             f"discriminator; {value.kind!r} canaries are not supported there")
        return value
