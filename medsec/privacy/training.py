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
Normalisation: fixed (:func:`fix_normalisation`), never the private images' statistics. Noise:
torch's seeded generator, or Opacus' secure mode with ``privacy.dp.secure_mode``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader

from medsec.errors import ConfigError
from medsec.privacy.accounting import UnreachableEpsilonError
from medsec.privacy.config import DPConfig
from medsec.privacy.plan import DPPlan, DPRecord, plan_dp
from medsec.training.config import ClassifierRecipe, Hardware
from medsec.training.fit import FitResult, fit_classifier
from medsec.training.job import BEST_VAL, LAST_EPOCH, FitStrategy, plain_fit
from medsec.training.module import ClassifierModule

# Printed on every DP run, harmless here: the first layer's input needs no gradient; seeded
# noise (no secure_mode) is recorded as such (``noise: seeded``).
_BENIGN_WARNINGS = ("Full backward hook is firing", "Secure RNG turned off")
FIXED_MEAN = FIXED_STD = 0.5  # maps [0, 1] to [-1, 1], whatever the data


def fix_normalisation(net: torch.nn.Module) -> str:
    """Set ``net.normalize`` (if any) to mean 0.5, std 0.5 per channel, in place: statistics of
    the private training images would reach the model outside DP-SGD. Returns the record's
    ``normalisation``: ``fixed``, or ``none`` without a normalisation layer."""
    norm = getattr(net, "normalize", None)
    if norm is None or not hasattr(norm, "mean"):
        return "none"
    with torch.no_grad():
        norm.mean.fill_(FIXED_MEAN)
        norm.std.fill_(FIXED_STD)
    return "fixed"


def plan_private_training(dp: DPConfig, recipe: ClassifierRecipe, net: torch.nn.Module,
                          train_loader: DataLoader) -> DPPlan:
    """Resolve DP-SGD (:func:`~medsec.privacy.plan.plan_dp`) for ``net`` on ``train_loader``
    over ``train.epochs`` and check that ``net`` is DP-compatible.

    Raises :class:`ConfigError` naming the field: ``privacy.dp.delta`` (>= 1/N),
    ``model.norm`` (a layer DP-SGD cannot train, named), ``privacy.dp.target_epsilon``
    (unreachable) or ``privacy.dp.secure_mode`` (``torchcsprng`` missing).
    """
    if dp.secure_mode:
        try:
            import torchcsprng  # noqa: F401  (Opacus' secure generator)
        except ImportError:
            raise ConfigError(
                "privacy.dp.secure_mode: Opacus' secure mode needs the torchcsprng package, "
                "which is not installed (PyPI has no wheel for recent torch/Python: build it "
                "from source, https://github.com/pytorch/csprng#installation), or set "
                "privacy.dp.secure_mode=false for seeded noise (experiments only)"
            ) from None
    try:
        plan = plan_dp(dp, len(train_loader.dataset), len(train_loader),  # type: ignore[arg-type]
                       recipe.train.epochs)
    except UnreachableEpsilonError as exc:
        raise ConfigError(f"privacy.dp.target_epsilon: {exc}") from None
    except ValueError as exc:  # delta >= 1/N, or no training image
        raise ConfigError(f"privacy.dp.delta: {exc}") from None
    from medsec.privacy.dp import check_dp_compatible, example_batch  # Opacus: DP runs only

    try:
        check_dp_compatible(net, example_batch(train_loader))
    except ValueError as exc:
        raise ConfigError(
            f"model.norm: privacy.dp.enabled needs a DP-compatible network, but model "
            f"{recipe.model.name!r} with norm={recipe.model.norm!r} is not: {exc} "
            "(set model.norm=group)"
        ) from None
    return plan


def dp_hardware(recipe: ClassifierRecipe) -> Hardware:
    """``recipe.train``'s hardware for DP-SGD: the accelerator as configured, one process, float32.

    ConfigError naming ``train.devices`` (several processes: use
    :func:`medsec.privacy.ddp.train_dp_distributed`, Opacus' DPDDP recipe) or
    ``train.precision`` (Opacus' per-sample gradients and clipping run in float32).
    """
    hardware = recipe.train.hardware()
    if hardware.devices > 1:
        raise ConfigError("train.devices: DP-SGD through Lightning trains in one process; for "
                          "several use medsec.privacy.ddp (Opacus DPDDP, README 'Devices and "
                          "multi-process training')")
    if hardware.precision != "32":
        raise ConfigError(f"train.precision: DP-SGD trains in float32 (Opacus per-sample "
                          f"gradients), got {hardware.precision}; set train.precision=32")
    return hardware


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
        hardware = dp_hardware(recipe)
        normalisation = fix_normalisation(module.net)
        with warnings.catch_warnings():
            for benign in _BENIGN_WARNINGS:
                warnings.filterwarnings("ignore", message=benign)
            from medsec.privacy.dp import EpsilonLogger, private_training

            plan = plan_private_training(self.dp, recipe, module.net, train_loader)
            with private_training(module, train_loader, plan) as (loader, state):
                history = EpsilonLogger(state, log=False)
                fit = fit_classifier(module, loader, val_loader, plan.epochs, recipe.seed,
                                     [history, *callbacks], select_best=select_best,
                                     progress=progress, hardware=hardware)
        # the last epoch's epsilon is the run's (no step follows it: saves an accountant call)
        epsilon = history.epsilons[-1] if history.epsilons else state.epsilon()
        record = DPRecord(plan, epsilon, state.steps, tuple(history.epsilons),
                          BEST_VAL if select_best else LAST_EPOCH, normalisation)
        return fit, record.to_dict()


def fit_strategy(dp: DPConfig) -> FitStrategy:
    """:class:`DPStrategy` when ``dp.enabled``, else the plain fit: the one place that chooses."""
    return DPStrategy(dp) if dp.enabled else plain_fit
