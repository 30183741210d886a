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
from medsec.privacy.leakage_config import CanaryAuditConfig

AttackName = Literal["loss", "shadow", "lira", "rmia", "extraction", "inversion"]
ALL_ATTACKS: tuple[str, ...] = ("loss", "shadow", "lira", "rmia", "extraction", "inversion")


def _distinct(value: tuple, what: str, ok: bool = True, allow_empty: bool = False) -> tuple:
    """``value`` if ``ok`` and its items are distinct (and some, unless ``allow_empty``)."""
    if not ok or not (value or allow_empty) or len(set(value)) != len(value):
        raise ValueError(f"need distinct {what}, got {list(value)}")
    return value


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

    ``secure_mode``: Opacus' secure mode (noise and Poisson sampling from ``/dev/urandom``
    through the ``torchcsprng`` package, noise robust to floating-point attacks) for real
    releases; off (default), noise comes from torch's seeded generator (reproducible, for
    experiments). Records tag it: ``noise`` = ``secure`` / ``seeded``. Under DP the model's
    normalisation is fixed (mean 0.5, std 0.5 per channel), never the training images' statistics.
    """

    enabled: bool = False
    noise_multiplier: float | None = Field(default=None, gt=0.0)
    target_epsilon: float | None = Field(default=None, gt=0.0)
    delta: float | None = Field(default=None, gt=0.0, lt=1.0)
    max_grad_norm: float = Field(default=1.0, gt=0.0)
    accountant: Accountant = "prv"
    max_physical_batch_size: int = Field(default=128, gt=0)
    val_is_public: bool = False
    secure_mode: bool = False

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
        return tuple(sorted(_distinct(value, "positive query budgets", min(value or [0]) >= 1)))

    @field_validator("modes")
    @classmethod
    def _modes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _distinct(value, "modes out of probs, labels")


class InversionConfig(StrictModel):
    """Class-representative inversion: ``steps`` of Adam (``lr``) on the pixels, TV weight."""

    steps: int = Field(default=300, ge=1, le=100000)
    lr: float = Field(default=0.05, gt=0.0)
    tv_weight: float = Field(default=0.1, ge=0.0)


MiaAttackName = Literal["loss", "shadow", "lira_online", "lira_offline", "rmia"]


class AuditConfig(StrictModel):
    """What the privacy audit runs and on how many examples.

    Two protocols (MLflow tag ``medsec.audit``). ``recipe`` (the ``privacy`` stage, the
    headline): every sweep point's target is trained on a seeded random half of a pool drawn
    from the training and validation images (``pool_size``; None = all, deduplicated), so
    members and non-members are exchangeable; ``num_reference`` reference models are trained
    the same way on random halves of the pool and queried with augmented views
    (``query_augment``: ``shift`` = identity + the 2-pixel shifts of training's augmentation,
    ``flip_shift`` adds horizontal flips). The attacks are ``loss``, ``lira_online``,
    ``lira_offline`` and ``rmia`` (population = the pool's non-members of the target).
    ``checkpoint`` (``medsec stage audit``): an existing checkpoint, with the fields below.

    ``declared_attack`` (declared before running) gives the headline ``mia_auc`` etc.; every
    other attack is reported beside it under its own name (``mia_<attack>_*``), never
    max-selected. AUC intervals: stratified bootstrap with ``n_bootstrap`` resamples.

    Membership inference audits ``num_members`` images of the target's training split against
    ``num_nonmembers`` held-out images (from ``nonmember_splits``), deduplicated by content
    hash (an image in both is audited as neither). Non-members must come from the training
    split's distribution, else the audit measures the shift, not memorisation: MedMNIST's val
    split is a random part of the original training data, its test split is not. Hence the
    default ``("val",)``, but non-members are never images the model saw: a model whose epoch
    was selected on val (checkpoint ``selection``, e.g. ``train.select_best``) is audited
    against test instead, and the result says so (``nonmembers_from``). ``num_population``
    other unseen held-out images (non-member leftovers, then the other split) are RMIA's
    population. ``lira`` runs online and offline LiRA on ``num_reference`` reference
    models (even, >= 2, 8 or more for a real audit: each audited image is in half of
    them), ``shadow`` trains ``num_shadow`` shadow models; both use the target's own
    training recipe (same network, optimiser, epochs and DP settings). Sizes larger than
    the data are reduced to what is available (the run records the sizes used).
    ``checkpoint`` is what ``medsec stage audit`` audits.
    """

    attacks: tuple[AttackName, ...] = ALL_ATTACKS  # type: ignore[assignment]
    num_members: int = Field(default=500, ge=8)
    num_nonmembers: int = Field(default=500, ge=8)
    num_population: int = Field(default=200, ge=8)
    nonmember_splits: tuple[Literal["val", "test"], ...] = ("val",)
    num_reference: int = Field(default=8, ge=2, le=256)
    num_shadow: int = Field(default=2, ge=1, le=64)
    shadow_features: Literal["sorted", "per_class"] = "sorted"
    rmia_gamma: float = Field(default=2.0, gt=0.0)
    extraction: ExtractionConfig = ExtractionConfig()
    inversion: InversionConfig = InversionConfig()
    checkpoint: str = "models/classifier.pt"
    declared_attack: MiaAttackName = "lira_online"
    pool_size: int | None = Field(default=None, ge=8)
    query_augment: Literal["none", "shift", "flip_shift"] = "shift"
    n_bootstrap: int = Field(default=1000, ge=1000, le=100000)

    @model_validator(mode="after")
    def _declared_is_run(self) -> AuditConfig:
        family = {"lira_online": "lira", "lira_offline": "lira"}.get(self.declared_attack,
                                                                     self.declared_attack)
        if family not in self.attacks:
            raise ValueError(f"declared_attack: {self.declared_attack} is not among the "
                             f"attacks {list(self.attacks)}")
        return self

    @field_validator("attacks")
    @classmethod
    def _attacks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _distinct(value, f"attacks out of {', '.join(ALL_ATTACKS)}")

    @field_validator("num_reference")
    @classmethod
    def _even(cls, value: int) -> int:
        if value % 2:
            raise ValueError(f"must be even (each image is in half of the models), got {value}")
        return value

    @field_validator("nonmember_splits")
    @classmethod
    def _splits(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _distinct(value, "held-out splits (val, test)")


class AdversarialRecipe(StrictModel):
    """An adversarially trained recipe the recipe audit also audits (non-private, GroupNorm
    like the sweep): ``pgd_at`` (Madry et al.) or ``trades`` (Zhang et al., ``beta``), L-inf
    ``eps`` in [0, 1] pixel units, ``steps`` of PGD with step ``eps / 4``."""

    kind: Literal["pgd_at", "trades"]
    eps: float = Field(default=8 / 255, gt=0.0, le=1.0)
    steps: int = Field(default=5, ge=1, le=100)
    beta: float = Field(default=6.0, gt=0.0)


class PrivacyConfig(StrictModel):
    """DP training (``dp``), the audit (``audit``) and the privacy-utility sweep: one model per
    target epsilon in ``sweep`` plus, with ``sweep_baseline``, the non-private one; the sweep's
    models train ``epochs`` epochs (None = ``train.epochs``). ``canary``: the one-run DP audit
    of every sweep point (gradient canaries, :mod:`medsec.privacy.canary_audit`)."""

    dp: DPConfig = DPConfig()
    audit: AuditConfig = AuditConfig()
    canary: CanaryAuditConfig = CanaryAuditConfig()
    sweep: tuple[float, ...] = (1.0, 3.0, 8.0)
    sweep_baseline: bool = True
    epochs: int | None = Field(default=None, ge=1, le=1000)
    adversarial: tuple[AdversarialRecipe, ...] = ()

    @field_validator("sweep")
    @classmethod
    def _sweep(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        ok = all(eps > 0 for eps in value)
        return tuple(sorted(_distinct(value, "target epsilons > 0", ok, allow_empty=True)))

    @model_validator(mode="after")
    def _some_point(self) -> PrivacyConfig:
        if not self.sweep and not self.sweep_baseline:
            raise ValueError("sweep: empty sweep (no target epsilon and sweep_baseline=false)")
        return self
