"""``defense:`` section of the config: which defenses to build and how they are attacked.

``defense.defenses`` is a list of ``{name, params, label}`` entries; ``name`` is one of
:data:`DEFENSE_PARAMS` and ``params`` is checked against that defense's parameter model, so
an unknown name or parameter is a :class:`~medsec.errors.ConfigError` naming the field, e.g.
``defense.defenses.1: Value error, params.qualty: unknown parameter of defense 'jpeg' ...``.
``label`` (default: the name) names the run, the checkpoint and the scorecard row; it lets one
defense appear twice (e.g. PGD training at 2/255 and at 4/255).

``defense.eval`` fixes the threat model every defense (and the undefended baseline) is scored
under: L-inf budget ``eps`` in pixel units (a number or a fraction such as ``"4/255"``; the
same for every ``eps``/``alpha`` here), PGD ``steps``, the Square query budget, EOT
samples, the certification radii and the gradient-masking tolerances.

This module stays light (pydantic only): ``medsec.config`` imports it on every run.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from medsec.attacks.config import Epsilon
from medsec.config_base import StrictModel

DefenseKind = Literal["training", "transform", "detector", "certification"]


def _eps() -> Any:
    return Field(default=4 / 255, gt=0.0, le=1.0)


def _epochs() -> Any:
    return Field(default=None, gt=0, le=1000)


# ----------------------------------------------------------------------- parameter models


class _Trained(StrictModel):
    """Shared by training-time defenses: ``epochs`` None = ``train.epochs``; ``init``
    ``scratch`` (a fresh network, the default) or ``baseline`` (fine-tune the undefended one)."""

    epochs: int | None = _epochs()
    init: Literal["scratch", "baseline"] = "scratch"


class PGDTrainingParams(_Trained):
    """Madry et al. 2018: train on PGD examples (``alpha`` None = eps/4)."""

    eps: Epsilon = _eps()
    alpha: Epsilon | None = Field(default=None, gt=0.0, le=1.0)
    steps: int = Field(default=7, gt=0, le=1000)


class TradesParams(PGDTrainingParams):
    """Zhang et al. 2019: CE + beta * KL(f(x) || f(x')) with x' the KL-maximising PGD point."""

    steps: int = Field(default=5, gt=0, le=1000)
    beta: float = Field(default=6.0, gt=0.0)


class FastFGSMParams(_Trained):
    """Wong et al. 2020: one FGSM step of ``alpha`` (None = 1.25 eps) from a random start."""

    eps: Epsilon = _eps()
    alpha: Epsilon | None = Field(default=None, gt=0.0, le=1.0)


class NoiseTrainingParams(_Trained):
    """Gaussian-noise augmentation with standard deviation ``sigma`` (pixel units)."""

    sigma: float = Field(default=0.1, gt=0.0, le=2.0)


class DistillationParams(_Trained):
    """Papernot et al. 2016: teacher and student trained at ``temperature``, deployed at 1."""

    temperature: float = Field(default=20.0, gt=0.0, le=1000.0)


class BitDepthParams(StrictModel):
    bits: int = Field(default=4, ge=1, le=8)


class MedianParams(StrictModel):
    size: int = Field(default=3, ge=2, le=9)


class JpegParams(StrictModel):
    quality: int = Field(default=75, ge=1, le=95)


class LowPassParams(StrictModel):
    """Keep spatial frequencies up to ``cutoff`` times the Nyquist frequency (radially)."""

    cutoff: float = Field(default=0.5, gt=0.0, le=1.0)


class AutoEncoderParams(StrictModel):
    """MagNet's autoencoder (MONAI ``AutoEncoder``), trained on clean training images."""

    channels: tuple[int, ...] = (16, 32)
    epochs: int = Field(default=5, gt=0, le=1000)
    lr: float = Field(default=1e-3, gt=0.0)
    noise: float = Field(default=0.025, ge=0.0, le=1.0)


class _Detector(StrictModel):
    """Detectors: the threshold rejects a fraction ``fpr`` of the clean validation images."""

    fpr: float = Field(default=0.05, gt=0.0, lt=1.0)


class MagNetDetectorParams(AutoEncoderParams, _Detector):
    """MagNet detector I: reconstruction error of the autoencoder."""


class MahalanobisParams(_Detector):
    """Lee et al. 2018 on penultimate features (class statistics from ``max_fit`` images)."""

    max_fit: int = Field(default=1000, gt=1)


class SqueezeDetectorParams(BitDepthParams, _Detector):
    """Xu et al. 2018: L1 between predictions on x and on squeezed x (bit depth, median)."""

    median_size: int = Field(default=2, ge=2, le=9)


class SmoothingParams(StrictModel):
    """Cohen et al. 2019: Gaussian noise ``sigma``; ``n0`` selection and ``n`` estimation
    samples per image, failure probability ``alpha``. ``base``: ``noise_trained`` (train the
    base classifier with noise of the same sigma, ``epochs`` None = train.epochs) or
    ``baseline`` (smooth the undefended model as is)."""

    sigma: float = Field(default=0.25, gt=0.0, le=2.0)
    n0: int = Field(default=16, gt=0)
    n: int = Field(default=100, gt=1)
    alpha: float = Field(default=0.001, gt=0.0, lt=0.5)
    base: Literal["noise_trained", "baseline"] = "noise_trained"
    epochs: int | None = _epochs()


_DEFENSES: dict[str, tuple[type[StrictModel], DefenseKind]] = {
    "pgd_at": (PGDTrainingParams, "training"),
    "trades": (TradesParams, "training"),
    "fast_fgsm_at": (FastFGSMParams, "training"),
    "gaussian_noise": (NoiseTrainingParams, "training"),
    "distillation": (DistillationParams, "training"),
    "bit_depth": (BitDepthParams, "transform"),
    "median_filter": (MedianParams, "transform"),
    "jpeg": (JpegParams, "transform"),
    "low_pass": (LowPassParams, "transform"),
    "magnet_reformer": (AutoEncoderParams, "transform"),
    "mahalanobis": (MahalanobisParams, "detector"),
    "squeeze_detector": (SqueezeDetectorParams, "detector"),
    "magnet_detector": (MagNetDetectorParams, "detector"),
    "smoothing": (SmoothingParams, "certification"),
}
DEFENSE_PARAMS: dict[str, type[StrictModel]] = {k: v[0] for k, v in _DEFENSES.items()}
"""Every defense name (as used in configs) -> its parameter model."""
DEFENSE_KINDS: dict[str, DefenseKind] = {k: v[1] for k, v in _DEFENSES.items()}


def _format(err: ValidationError) -> str:
    parts = []
    for item in err.errors():
        loc = ".".join(str(p) for p in item["loc"])
        msg = "unknown parameter" if item["type"] == "extra_forbidden" else item["msg"]
        parts.append(f"params.{loc}: {msg}" if loc else f"params: {msg}")
    return "; ".join(parts)


class DefenseSpec(StrictModel):
    """One configured defense: ``name`` (see :data:`DEFENSE_PARAMS`), its ``params`` (all
    defaults filled in after validation) and a ``label`` (default: the name)."""

    name: str
    params: dict[str, Any] = {}
    label: str | None = Field(default=None, pattern=r"^[a-z0-9_]+$")

    @model_validator(mode="before")
    @classmethod
    def _check_params(cls, data: Any) -> Any:
        if isinstance(data, str):
            data = {"name": data}
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            return data  # pydantic reports the missing/wrong field itself
        name = data["name"]
        if name not in DEFENSE_PARAMS:
            raise ValueError(f"name: unknown defense {name!r}; known: {', '.join(DEFENSE_PARAMS)}")
        params = data.get("params") or {}
        if not isinstance(params, dict):
            raise ValueError(f"params: must be a mapping of parameter -> value for {name!r}")
        model = DEFENSE_PARAMS[name]
        try:
            checked = model.model_validate(params)
        except ValidationError as exc:
            raise ValueError(
                f"{_format(exc)} (defense {name!r} accepts: {', '.join(model.model_fields)})"
            ) from None
        return {**data, "params": checked.model_dump()}

    @property
    def key(self) -> str:
        """The defense's label: run name, checkpoint file name and ``medsec.defense`` tag."""
        return self.label or self.name

    @property
    def kind(self) -> DefenseKind:
        return DEFENSE_KINDS[self.name]

    def options(self) -> BaseModel:
        """The validated parameter model (e.g. :class:`JpegParams`)."""
        return DEFENSE_PARAMS[self.name].model_validate(self.params)


class DefenseEvalConfig(StrictModel):
    """The threat model and the checks every defense is scored under; the defaults are the
    strong adaptive evaluation (PGD-100 with 5 restarts, the adaptive one with 6, Square-5000).

    ``eps`` (L-inf, pixel units), PGD ``steps`` with step ``alpha`` (None = 2.5 eps / steps)
    and ``restarts``; ``square_queries`` for the black-box Square attack; ``eot_samples``
    noise draws per EOT gradient (and ``predict_samples`` per prediction of a randomised
    defense); ``max_examples`` test images (after ``dataset.max_eval``); detectors are scored
    against ``detection_attacks``; ``radii`` are the L2 radii of certified accuracy.
    Flags: robust accuracy that rises by more than ``flag_tolerance`` (with 2x eps or
    ``steps_factor`` x steps), Square more than ``flag_tolerance`` stronger than PGD, or more
    than half the examples with an input-gradient L1 norm <= ``grad_tol``.
    """

    eps: Epsilon = _eps()
    steps: int = Field(default=100, gt=0, le=10000)
    alpha: Epsilon | None = Field(default=None, gt=0.0, le=1.0)
    restarts: int = Field(default=5, gt=0, le=100)
    square_queries: int = Field(default=5000, gt=1)
    eot_samples: int = Field(default=8, gt=0, le=1024)
    predict_samples: int = Field(default=16, gt=0, le=4096)
    max_examples: int | None = Field(default=100, gt=1)
    detection_attacks: tuple[Literal["fgsm", "pgd", "square"], ...] = ("fgsm", "pgd", "square")
    radii: tuple[float, ...] = (0.1, 0.25, 0.5)
    flag_tolerance: float = Field(default=0.02, ge=0.0, le=1.0)
    steps_factor: int = Field(default=5, ge=2, le=100)
    grad_tol: float = Field(default=1e-10, ge=0.0)
    batch_size: int = Field(default=256, gt=0)

    @field_validator("radii")
    @classmethod
    def _positive_radii(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(r < 0 for r in value):
            raise ValueError("radii must be a non-empty list of L2 radii >= 0")
        return tuple(sorted(value))

    @property
    def step_size(self) -> float:
        """PGD step: ``alpha`` or 2.5 eps / steps (Madry et al.)."""
        return self.alpha if self.alpha is not None else 2.5 * self.eps / self.steps


_DEFAULT_DEFENSES = (
    DefenseSpec(name="fast_fgsm_at"),
    DefenseSpec(name="bit_depth"),
    DefenseSpec(name="jpeg", params={"quality": 50}),
    DefenseSpec(name="mahalanobis"),
    DefenseSpec(name="smoothing", params={"sigma": 0.12}),
)


class DefenseConfig(StrictModel):
    """Defenses to build and score (see module docstring); labels must be unique.

    ``num_threads``: torch intra-op threads of the defense stage (None = torch's default).
    Attacks on small models run fastest single-threaded, and on a shared machine two threads
    per process can be several times slower than one.
    """

    defenses: tuple[DefenseSpec, ...] = _DEFAULT_DEFENSES
    eval: DefenseEvalConfig = DefenseEvalConfig()
    num_threads: int | None = Field(default=1, gt=0)

    @field_validator("defenses")
    @classmethod
    def _unique_labels(cls, value: tuple[DefenseSpec, ...]) -> tuple[DefenseSpec, ...]:
        keys = [spec.key for spec in value]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise ValueError(f"labels must be unique (give each a `label`): {', '.join(twice)}")
        if "undefended" in keys:
            raise ValueError("the label 'undefended' is reserved for the baseline")
        return value
