"""DP-SGD as a fit strategy of the project's one training path
(``medsec.training.job.train_classifier(..., strategy=DPStrategy(dp))``).

:class:`DPStrategy` plans the run
(:func:`plan_private_training`: delta, noise, compatibility; errors name the config field),
then trains with :func:`medsec.privacy.dp.private_training` inside the usual
``fit_classifier``. Epsilon is written into every epoch's history record (``epsilon``), and
:func:`privacy_record` is what the checkpoint metadata stores (``meta["privacy"]``).

Model selection: DP runs keep the last epoch unless ``privacy.dp.val_is_public`` (see
:class:`medsec.privacy.config.DPConfig`); the reported epsilon is always the whole run's.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader

from medsec.errors import ConfigError
from medsec.privacy.accounting import UnreachableEpsilonError, noise_for_target
from medsec.privacy.config import DPConfig
from medsec.privacy.dp import DPSettings, EpsilonLogger, check_dp_compatible, private_training
from medsec.training.config import ClassifierRecipe
from medsec.training.fit import FitResult, fit_classifier
from medsec.training.module import ClassifierModule

# Printed on every DP run, harmless here: the first layer's input needs no gradient; the
# noise comes from torch's (seeded) generator, not a cryptographically secure one.
_BENIGN_WARNINGS = ("Full backward hook is firing", "Secure RNG turned off")


@dataclass(frozen=True)
class DPPlan:
    """A resolved DP-SGD run: ``settings`` carry the (calibrated) noise multiplier and delta.

    ``sample_rate`` = 1 / steps_per_epoch (Opacus' convention: expected batch / N).
    """

    settings: DPSettings
    target_epsilon: float | None
    num_examples: int
    steps_per_epoch: int
    epochs: int

    @property
    def sample_rate(self) -> float:
        return 1.0 / self.steps_per_epoch

    @property
    def planned_steps(self) -> int:
        return self.steps_per_epoch * self.epochs


def dp_settings(dp: DPConfig, noise_multiplier: float | None = None,
                delta: float | None = None) -> DPSettings:
    """``DPSettings`` from the config; ``noise_multiplier`` / ``delta`` replace the config's
    noise source / delta when given (after calibration / resolution)."""
    if noise_multiplier is not None:
        return DPSettings(noise_multiplier=noise_multiplier, delta=delta or dp.delta,
                          max_grad_norm=dp.max_grad_norm, accountant=dp.accountant,
                          max_physical_batch_size=dp.max_physical_batch_size)
    return DPSettings(noise_multiplier=dp.noise_multiplier, target_epsilon=dp.target_epsilon,
                      delta=delta or dp.delta, max_grad_norm=dp.max_grad_norm,
                      accountant=dp.accountant,
                      max_physical_batch_size=dp.max_physical_batch_size)


def plan_private_training(dp: DPConfig, recipe: ClassifierRecipe, net: torch.nn.Module,
                          train_loader: DataLoader) -> DPPlan:
    """Check and resolve DP-SGD for ``net`` on ``train_loader`` over ``train.epochs``.

    Raises :class:`ConfigError` naming the field: ``model.norm`` (a layer DP-SGD cannot train,
    named), ``privacy.dp.delta`` (>= 1/N) or ``privacy.dp.target_epsilon`` (unreachable).
    """
    if not dp.enabled:
        raise ValueError("plan_private_training needs privacy.dp.enabled")
    dataset = train_loader.dataset
    n = len(dataset)  # type: ignore[arg-type]
    try:
        delta = dp_settings(dp).resolve_delta(n)
    except ValueError as exc:
        raise ConfigError(f"privacy.dp.delta: {exc}") from None
    example = torch.stack([dataset[i][0] for i in range(min(2, n))])
    try:
        check_dp_compatible(net, example)
    except ValueError as exc:
        raise ConfigError(
            f"model.norm: privacy.dp.enabled needs a DP-compatible network, but model "
            f"{recipe.model.name!r} with norm={recipe.model.norm!r} is not: {exc} "
            "(set model.norm=group)"
        ) from None
    steps_per_epoch = len(train_loader)
    sigma = dp.noise_multiplier
    if sigma is None:
        assert dp.target_epsilon is not None
        try:
            sigma = noise_for_target(dp.target_epsilon, 1.0 / steps_per_epoch,
                                     steps_per_epoch * recipe.train.epochs, delta, dp.accountant)
        except UnreachableEpsilonError as exc:
            raise ConfigError(f"privacy.dp.target_epsilon: {exc}") from None
    return DPPlan(settings=dp_settings(dp, sigma, delta), target_epsilon=dp.target_epsilon,
                  num_examples=n, steps_per_epoch=steps_per_epoch,
                  epochs=recipe.train.epochs)


class EpsilonHistory(EpsilonLogger):
    """:class:`EpsilonLogger` that also stores ``epsilon`` in the epoch's history record, so
    per-epoch loggers (MLflow) and the history CSV carry it. Put it before those loggers."""

    def __init__(self, state: Any) -> None:
        super().__init__(state, log=False)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        history = getattr(pl_module, "history", [])
        if history and int(history[-1]["epoch"]) == trainer.current_epoch:
            history[-1]["epsilon"] = self.epsilons[-1]


def privacy_record(state: Any, plan: DPPlan, epsilons: Sequence[float],
                   selection: str) -> dict[str, Any]:
    """Plain-typed DP record of a finished run (for the checkpoint metadata and MLflow); the
    last epoch's epsilon is the run's (no step follows it: saves one accountant call)."""
    return {
        "mechanism": "dp-sgd", "epsilon": epsilons[-1] if epsilons else state.epsilon(),
        "delta": state.delta,
        "accountant": state.accountant, "sample_rate": state.sample_rate, "steps": state.steps,
        "noise_multiplier": state.noise_multiplier, "max_grad_norm": state.max_grad_norm,
        "target_epsilon": plan.target_epsilon, "num_examples": plan.num_examples,
        "epochs": plan.epochs, "poisson_sampling": state.poisson_sampling,
        "epsilon_per_epoch": [float(e) for e in epsilons], "selection": selection,
    }


def dp_metrics(record: dict[str, Any]) -> dict[str, float]:
    """Numeric MLflow metrics of a :func:`privacy_record` (``epsilon``, ``dp_*``); empty for
    a non-private record."""
    if record.get("mechanism") != "dp-sgd":
        return {}
    out = {"epsilon": record["epsilon"]}
    for key in ("delta", "noise_multiplier", "max_grad_norm", "sample_rate", "steps",
                "target_epsilon"):
        if record.get(key) is not None:
            out[f"dp_{key}"] = float(record[key])
    return out


@dataclass(frozen=True)
class DPStrategy:
    """DP-SGD fit strategy (``medsec.training.job.FitStrategy``) for ``recipe.train.epochs``:
    returns (fit, :func:`privacy_record`)."""

    dp: DPConfig

    def __call__(self, module: ClassifierModule, train_loader: DataLoader,
                 val_loader: DataLoader, recipe: ClassifierRecipe,
                 callbacks: Sequence[Callback] = (), progress: bool = False,
                 ) -> tuple[FitResult, dict[str, Any]]:
        select_best = recipe.train.select_best and self.dp.val_is_public
        selection = "best validation AUC (validation treated as public)" if select_best else (
            "last epoch")
        with warnings.catch_warnings():
            for benign in _BENIGN_WARNINGS:
                warnings.filterwarnings("ignore", message=benign)
            plan = plan_private_training(self.dp, recipe, module.net, train_loader)
            with private_training(module, train_loader, plan.settings, plan.epochs) as (
                    loader, state):
                history = EpsilonHistory(state)
                fit = fit_classifier(module, loader, val_loader, plan.epochs, recipe.seed,
                                     [history, *callbacks], select_best=select_best,
                                     progress=progress)
        return fit, privacy_record(state, plan, history.epsilons, selection)
