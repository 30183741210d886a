"""``privacy:`` section of the config: DP-SGD training, the privacy audit and the sweep.

- ``privacy.dp``: DP-SGD (Opacus) for the project's one training path, also the input of
  :func:`medsec.privacy.plan.plan_dp` for any DP-SGD run. Checks that need the data (delta <
  1/N, a reachable target epsilon, a DP-compatible model) run when training starts and name
  the field, e.g.
  ``privacy.dp.target_epsilon: target_epsilon=0.01 is unreachable with 20 steps ...``.
- ``privacy.audit``: which attacks audit a model and on how many examples.
- ``privacy.sweep``: target epsilons of the privacy-utility sweep (plus the non-private
  baseline when ``sweep_baseline``).

This module stays light (pydantic and :mod:`~medsec.privacy.accounting`, whose Opacus import is
lazy): ``medsec.config`` imports it on every run.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from medsec.config_base import StrictModel
from medsec.privacy.accounting import Accountant, check_prv_noise

AttackName = Literal["loss", "shadow", "lira", "rmia", "extraction", "inversion"]
ALL_ATTACKS: tuple[str, ...] = ("loss", "shadow", "lira", "rmia", "extraction", "inversion")


class DPConfig(StrictModel):
    """DP-SGD with Poisson sampling and per-sample clipping (Opacus), for ``train``.

    Exactly one of ``noise_multiplier`` / ``target_epsilon`` when ``enabled`` (a target is
    met after ``train.epochs`` epochs). ``delta`` None = 1/(10 N), N the training images; an
    explicit delta must be < 1/N. ``accountant``: ``prv`` (tight, default), ``rdp`` (classic,
    looser), ``gdp`` (CLT, can underestimate). ``max_physical_batch_size`` bounds memory only
    (Opacus' BatchMemoryManager); it does not change the privacy guarantee.

    ``val_is_public``: DP runs keep the LAST epoch's weights by default, so validation images
    never influence the released model. With True, ``train.select_best`` applies: choosing an
    epoch on validation AUC is post-processing of the DP iterates, so epsilon still covers the
    training images, but the validation images get no protection (they must be public).
    """

    enabled: bool = False
    noise_multiplier: float | None = Field(default=None, gt=0.0)
    target_epsilon: float | None = Field(default=None, gt=0.0)
    delta: float | None = Field(default=None, gt=0.0, lt=1.0)
    max_grad_norm: float = Field(default=1.0, gt=0.0)
    accountant: Accountant = "prv"
    max_physical_batch_size: int = Field(default=128, gt=0)
    val_is_public: bool = False

    @model_validator(mode="after")
    def _one_noise_source(self) -> DPConfig:
        if self.enabled and (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ValueError(
                "noise_multiplier: DP training needs exactly one of noise_multiplier and "
                f"target_epsilon (got noise_multiplier={self.noise_multiplier}, "
                f"target_epsilon={self.target_epsilon})"
            )
        if self.noise_multiplier is not None:
            check_prv_noise(self.noise_multiplier, self.accountant)
        return self


class ExtractionConfig(StrictModel):
    """Model extraction: one copy per query ``budget`` and API ``mode`` (probabilities or
    labels only); the copy (victim's architecture) trains ``epochs`` with Adam ``lr``."""

    budgets: tuple[int, ...] = (100, 500, 2000)
    modes: tuple[Literal["probs", "labels"], ...] = ("probs", "labels")
    epochs: int = Field(default=10, ge=1, le=1000)
    lr: float = Field(default=1e-3, gt=0.0)
    batch_size: int = Field(default=64, gt=0)

    @field_validator("budgets")
    @classmethod
    def _budgets(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or min(value) < 1 or len(set(value)) != len(value):
            raise ValueError(f"need distinct positive query budgets, got {list(value)}")
        return tuple(sorted(value))

    @field_validator("modes")
    @classmethod
    def _modes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or len(set(value)) != len(value):
            raise ValueError(f"need distinct modes out of probs, labels; got {list(value)}")
        return value


class InversionConfig(StrictModel):
    """Class-representative inversion: ``steps`` of Adam (``lr``) on the pixels, TV weight."""

    steps: int = Field(default=300, ge=1, le=100000)
    lr: float = Field(default=0.05, gt=0.0)
    tv_weight: float = Field(default=0.1, ge=0.0)


class AuditConfig(StrictModel):
    """What the privacy audit runs and on how many examples.

    Membership inference audits ``num_members`` images of the target's training split against
    ``num_nonmembers`` held-out images (from ``nonmember_splits``), deduplicated by content
    hash (an image in both is audited as neither). Non-members must come from the training
    split's distribution, else the audit measures the shift, not memorisation: MedMNIST's val
    split is a random part of the original training data, its test split is not (on
    PneumoniaMNIST a loss threshold separates training from test images with AUC 0.76 even for
    a DP model at epsilon 1). Hence the default ``("val",)``; a model selected on val leaks a
    little about it. ``num_population`` other held-out images (val leftovers, then test) are
    RMIA's population. ``lira`` runs online and offline LiRA on ``num_reference`` reference
    models (even, >= 4: each audited image is in half of them), ``shadow`` trains
    ``num_shadow`` shadow models; both use the target's own training recipe (same network,
    optimiser, epochs and DP settings). Sizes larger than the data are reduced to what is
    available (the run records the sizes used). ``checkpoint`` is what ``medsec stage audit``
    audits.
    """

    attacks: tuple[AttackName, ...] = ALL_ATTACKS  # type: ignore[assignment]
    num_members: int = Field(default=500, ge=8)
    num_nonmembers: int = Field(default=500, ge=8)
    num_population: int = Field(default=200, ge=8)
    nonmember_splits: tuple[Literal["val", "test"], ...] = ("val",)
    num_reference: int = Field(default=4, ge=4, le=256)
    num_shadow: int = Field(default=2, ge=1, le=64)
    shadow_features: Literal["sorted", "per_class"] = "sorted"
    rmia_gamma: float = Field(default=2.0, gt=0.0)
    extraction: ExtractionConfig = ExtractionConfig()
    inversion: InversionConfig = InversionConfig()
    checkpoint: str = "models/classifier.pt"

    @field_validator("attacks")
    @classmethod
    def _attacks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or len(set(value)) != len(value):
            raise ValueError(f"need distinct attacks out of {', '.join(ALL_ATTACKS)}; got "
                             f"{list(value)}")
        return value

    @field_validator("num_reference")
    @classmethod
    def _even(cls, value: int) -> int:
        if value % 2:
            raise ValueError(f"must be even (each image is in half of the models), got {value}")
        return value

    @field_validator("nonmember_splits")
    @classmethod
    def _splits(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or len(set(value)) != len(value):
            raise ValueError(f"need distinct held-out splits (val, test), got {list(value)}")
        return value


class PrivacyConfig(StrictModel):
    """DP training (``dp``), the audit (``audit``) and the privacy-utility sweep: one model per
    target epsilon in ``sweep`` plus, with ``sweep_baseline``, the non-private one; the sweep's
    models train ``epochs`` epochs (None = ``train.epochs``)."""

    dp: DPConfig = DPConfig()
    audit: AuditConfig = AuditConfig()
    sweep: tuple[float, ...] = (1.0, 3.0, 8.0)
    sweep_baseline: bool = True
    epochs: int | None = Field(default=None, ge=1, le=1000)

    @field_validator("sweep")
    @classmethod
    def _sweep(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not eps > 0 for eps in value) or len(set(value)) != len(value):
            raise ValueError(f"need distinct target epsilons > 0, got {list(value)}")
        return tuple(sorted(value))

    @model_validator(mode="after")
    def _some_point(self) -> PrivacyConfig:
        if not self.sweep and not self.sweep_baseline:
            raise ValueError("sweep: empty sweep (no target epsilon and sweep_baseline=false)")
        return self
