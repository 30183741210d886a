"""DP settings in one shape: config (:class:`~medsec.privacy.config.DPConfig`) -> resolved
:class:`DPPlan` (:func:`plan_dp`) -> :class:`DPRecord` of the finished run.

The plan fixes everything the accountant needs before training: delta (default 1/(10 N), an
explicit one must be < 1/N), the noise multiplier (calibrated to ``target_epsilon`` over all
planned steps when no noise is given), clipping, accountant and sampling. The record's
:meth:`DPRecord.to_dict` is the checkpoint's ``meta["privacy"]`` and what MLflow logs.
Light: Opacus is imported only when an epsilon is computed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

from medsec.privacy.accounting import Accountant, epsilon_for, noise_for_target
from medsec.privacy.config import DPConfig

GradSampleMode = Literal["hooks", "functorch", "ghost"]


@dataclass(frozen=True)
class DPPlan:
    """A resolved DP-SGD run over ``num_examples`` training examples: ``steps_per_epoch``
    logical (Poisson) batches per epoch for ``epochs`` epochs, so ``sample_rate`` =
    1 / steps_per_epoch (Opacus' convention: expected batch / N).

    ``grad_sample_mode`` "ghost" (ghost clipping) only works with
    :func:`medsec.privacy.dp.make_private` in a plain torch loop, not with Lightning. The
    accountants assume Poisson sampling: with ``poisson_sampling=False`` (shuffled fixed-size
    batches) the epsilon is only an approximation. ``secure_mode``: Opacus' secure generator
    (needs ``torchcsprng``) instead of torch's seeded one.
    """

    noise_multiplier: float
    delta: float
    max_grad_norm: float
    accountant: Accountant
    num_examples: int
    steps_per_epoch: int
    epochs: int
    target_epsilon: float | None = None
    max_physical_batch_size: int = 128
    poisson_sampling: bool = True
    grad_sample_mode: GradSampleMode = "hooks"
    secure_mode: bool = False

    @property
    def sample_rate(self) -> float:
        return 1.0 / self.steps_per_epoch

    @property
    def planned_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    def epsilon(self, steps: int | None = None) -> float:
        """Epsilon at ``delta`` after ``steps`` optimizer steps (None: all planned steps)."""
        return epsilon_for(self.noise_multiplier, self.sample_rate,
                           self.planned_steps if steps is None else steps, self.delta,
                           self.accountant)

    def params(self) -> dict[str, float | int | str | bool]:
        """Flat parameters for MLflow (``dp_*``)."""
        return {
            "dp_accountant": self.accountant, "dp_noise_multiplier": self.noise_multiplier,
            "dp_max_grad_norm": self.max_grad_norm, "dp_delta": self.delta,
            "dp_sample_rate": self.sample_rate, "dp_steps_per_epoch": self.steps_per_epoch,
            "dp_epochs": self.epochs, "dp_poisson_sampling": self.poisson_sampling,
            "dp_target_epsilon": (self.target_epsilon if self.target_epsilon is not None
                                  else "none"),
        }


def resolve_delta(delta: float | None, num_examples: int) -> float:
    """Delta for a training set of ``num_examples``: default 1/(10 N); must be < 1/N."""
    if num_examples < 1:
        raise ValueError(f"training set is empty (N={num_examples})")
    if delta is None:
        return 1.0 / (10 * num_examples)
    if delta >= 1.0 / num_examples:
        raise ValueError(
            f"delta={delta:g} must be < 1/N = {1.0 / num_examples:.3g} (N={num_examples}): a "
            "delta that large allows leaking a whole record"
        )
    return delta


def plan_dp(dp: DPConfig, num_examples: int, steps_per_epoch: int, epochs: int, *,
            poisson_sampling: bool = True, grad_sample_mode: GradSampleMode = "hooks",
            ) -> DPPlan:
    """Resolve ``dp`` (enabled) for ``num_examples`` training examples in ``steps_per_epoch``
    logical batches per epoch over ``epochs`` epochs.

    Raises ValueError for a delta >= 1/N (or an empty training set) and
    :class:`~medsec.privacy.accounting.UnreachableEpsilonError` (a ValueError) when the
    target epsilon cannot be met in ``steps_per_epoch * epochs`` steps.
    """
    if not dp.enabled:
        raise ValueError("plan_dp needs a DP config with enabled=true")
    delta = resolve_delta(dp.delta, num_examples)
    if steps_per_epoch < 1 or epochs < 1:
        raise ValueError(f"need steps_per_epoch, epochs >= 1, got {steps_per_epoch}, {epochs}")
    if grad_sample_mode not in get_args(GradSampleMode):
        raise ValueError(f"grad_sample_mode must be one of {get_args(GradSampleMode)}, got "
                         f"{grad_sample_mode!r}")
    sigma = dp.noise_multiplier
    if sigma is None:
        assert dp.target_epsilon is not None
        sigma = noise_for_target(dp.target_epsilon, 1.0 / steps_per_epoch,
                                 steps_per_epoch * epochs, delta, dp.accountant)
    return DPPlan(noise_multiplier=float(sigma), delta=delta, max_grad_norm=dp.max_grad_norm,
                  accountant=dp.accountant, num_examples=num_examples,
                  steps_per_epoch=steps_per_epoch, epochs=epochs,
                  target_epsilon=dp.target_epsilon,
                  max_physical_batch_size=dp.max_physical_batch_size,
                  poisson_sampling=poisson_sampling, grad_sample_mode=grad_sample_mode,
                  secure_mode=dp.secure_mode)


@dataclass(frozen=True)
class DPRecord:
    """What a finished DP-SGD run spent: ``epsilon`` at ``plan.delta`` after ``steps``
    optimizer steps (``epsilon_per_epoch``: after each epoch), the ``selection`` of the
    released weights (e.g. "last epoch") and the model's ``normalisation`` ("fixed": data-
    independent, nothing of the training images outside the mechanism). ``noise`` in the dict:
    ``secure`` (Opacus' secure mode) or ``seeded`` (torch's generator, reproducible)."""

    plan: DPPlan
    epsilon: float
    steps: int
    epsilon_per_epoch: tuple[float, ...]
    selection: str
    normalisation: str = "fixed"

    def to_dict(self) -> dict[str, Any]:
        """Plain types: the checkpoint's ``meta["privacy"]`` (also logged to MLflow)."""
        p = self.plan
        return {
            "mechanism": "dp-sgd", "epsilon": self.epsilon, "delta": p.delta,
            "accountant": p.accountant, "sample_rate": p.sample_rate, "steps": self.steps,
            "noise_multiplier": p.noise_multiplier, "max_grad_norm": p.max_grad_norm,
            "target_epsilon": p.target_epsilon, "num_examples": p.num_examples,
            "epochs": p.epochs, "poisson_sampling": p.poisson_sampling,
            "epsilon_per_epoch": [float(e) for e in self.epsilon_per_epoch],
            "selection": self.selection, "noise": "secure" if p.secure_mode else "seeded",
            "normalisation": self.normalisation,
        }


def dp_metrics(record: dict[str, Any]) -> dict[str, float]:
    """Numeric MLflow metrics of a ``meta["privacy"]`` record (``epsilon``, ``dp_*``); empty
    for a non-private record."""
    if record.get("mechanism") != "dp-sgd":
        return {}
    out = {"epsilon": record["epsilon"]}
    if record.get("delta") is not None:
        out["delta"] = float(record["delta"])  # the contract name (also as dp_delta)
    for key in ("delta", "noise_multiplier", "max_grad_norm", "sample_rate", "steps",
                "target_epsilon"):
        if record.get(key) is not None:
            out[f"dp_{key}"] = float(record[key])
    return out
