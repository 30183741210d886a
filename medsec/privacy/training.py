"""DP-SGD as a fit strategy of the project's one training path
(``medsec.training.job.train_classifier(..., strategy=DPStrategy(dp))``).

:class:`DPStrategy` plans the run
(:func:`plan_private_training`: delta, compatibility, noise; errors name the config field),
then trains with :func:`medsec.privacy.dp.private_training` inside the usual
``fit_classifier``. Epsilon is written into every epoch's history record (``epsilon``), and
the run's :class:`~medsec.privacy.plan.DPRecord` is what the checkpoint metadata stores
(``meta["privacy"]``).

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
from medsec.privacy.accounting import UnreachableEpsilonError
from medsec.privacy.config import DPConfig
from medsec.privacy.dp import EpsilonLogger, check_dp_compatible, private_training
from medsec.privacy.plan import DPPlan, DPRecord, plan_dp, resolve_delta
from medsec.training.config import ClassifierRecipe
from medsec.training.fit import FitResult, fit_classifier
from medsec.training.module import ClassifierModule

# Printed on every DP run, harmless here: the first layer's input needs no gradient; the
# noise comes from torch's (seeded) generator, not a cryptographically secure one.
_BENIGN_WARNINGS = ("Full backward hook is firing", "Secure RNG turned off")


def plan_private_training(dp: DPConfig, recipe: ClassifierRecipe, net: torch.nn.Module,
                          train_loader: DataLoader) -> DPPlan:
    """Resolve DP-SGD (:func:`~medsec.privacy.plan.plan_dp`) for ``net`` on ``train_loader``
    over ``train.epochs`` and check that ``net`` is DP-compatible.

    Raises :class:`ConfigError` naming the field: ``privacy.dp.delta`` (>= 1/N),
    ``model.norm`` (a layer DP-SGD cannot train, named) or ``privacy.dp.target_epsilon``
    (unreachable).
    """
    dataset = train_loader.dataset
    n = len(dataset)  # type: ignore[arg-type]
    try:
        resolve_delta(dp.delta, n)
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
    try:
        return plan_dp(dp, n, len(train_loader), recipe.train.epochs)
    except UnreachableEpsilonError as exc:
        raise ConfigError(f"privacy.dp.target_epsilon: {exc}") from None


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


@dataclass(frozen=True)
class DPStrategy:
    """DP-SGD fit strategy (``medsec.training.job.FitStrategy``) for ``recipe.train.epochs``:
    returns (fit, the :class:`~medsec.privacy.plan.DPRecord` as a dict)."""

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
            with private_training(module, train_loader, plan) as (loader, state):
                history = EpsilonHistory(state)
                fit = fit_classifier(module, loader, val_loader, plan.epochs, recipe.seed,
                                     [history, *callbacks], select_best=select_best,
                                     progress=progress)
        # the last epoch's epsilon is the run's (no step follows it: saves an accountant call)
        epsilon = history.epsilons[-1] if history.epsilons else state.epsilon()
        record = DPRecord(plan, epsilon, state.steps, tuple(history.epsilons), selection)
        return fit, record.to_dict()
