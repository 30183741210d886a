"""One hospital's local training: the project's ``ClassifierModule`` + ``fit_classifier``.

FedProx adds ``mu/2 * ||w - w_global||^2`` to the loss (:class:`FedProxModule`, a subclass of
the project's module, so there is still one training loop). Client-side DP-SGD wraps the same
fit in :func:`medsec.privacy.dp.private_training`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from medsec.data.types import ImageDataset
from medsec.federated.arrays import model_arrays
from medsec.federated.config import ClientDPConfig
from medsec.training.fit import fit_classifier, make_loader
from medsec.training.module import ClassifierModule


class FedProxModule(ClassifierModule):
    """``ClassifierModule`` whose training loss adds the FedProx proximal term.

    The anchor (the global weights received this round) is taken at construction time.
    """

    def __init__(self, net: nn.Module, num_classes: int, proximal_mu: float, **kwargs) -> None:
        super().__init__(net, num_classes, **kwargs)
        self.proximal_mu = float(proximal_mu)
        self._anchor = [p.detach().clone() for p in net.parameters()]

    def on_fit_start(self) -> None:
        """Move the anchor to the training device once (not per step)."""
        self._anchor = [a.to(self.device) for a in self._anchor]

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        loss = super().training_step(batch, batch_idx)
        prox = sum(((p - a) ** 2).sum() for p, a in zip(self.net.parameters(), self._anchor,
                                                        strict=True))
        return loss + 0.5 * self.proximal_mu * prox


@dataclass(frozen=True)
class LocalTraining:
    """Hyper-parameters of a local update (from ``train.*`` and ``federated.*``)."""

    epochs: int
    batch_size: int
    lr: float
    optimizer: str = "adam"
    weight_decay: float = 0.0
    augment: bool = False
    total_rounds: int = 1


@dataclass
class LocalResult:
    """Weights after local training (float32 dict), examples used, mean train loss,
    seconds, and the client's DP epsilon so far (NaN without DP)."""

    arrays: dict[str, np.ndarray]
    num_examples: int
    train_loss: float
    seconds: float
    epsilon: float = float("nan")


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Silence Lightning's per-fit banners (GPU/TPU availability, tips): one fit per client
    per round would repeat them dozens of times."""
    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def train_locally(
    net: nn.Module, train: ImageDataset, val: ImageDataset, num_classes: int,
    spec: LocalTraining, seed: int, proximal_mu: float = 0.0, dp: ClientDPConfig | None = None,
    rounds_done: int = 0, callbacks: Sequence[Callback] = (),
) -> LocalResult:
    """Train ``net`` (in place, already holding the global weights) for ``spec.epochs``.

    ``rounds_done``: earlier rounds this client trained in (DP accounting composes them).
    ``callbacks``: extra Lightning callbacks of the local fit (e.g. the one-run DP audit's
    canaries, :class:`medsec.privacy.canary_audit.CanaryCallback`).
    """
    kwargs = dict(lr=spec.lr, weight_decay=spec.weight_decay, optimizer=spec.optimizer,
                  augment=spec.augment)
    module = (FedProxModule(net, num_classes, proximal_mu, **kwargs) if proximal_mu > 0
              else ClassifierModule(net, num_classes, **kwargs))
    loader = make_loader(train, spec.batch_size, True, seed)
    val_loader = make_loader(val, 512, False, seed)
    start = time.perf_counter()
    epsilon = float("nan")
    with quiet_lightning():
        if dp is not None and dp.enabled:
            epsilon = _fit_private(module, loader, val_loader, spec, seed, dp, rounds_done,
                                   callbacks)
        else:
            fit_classifier(module, loader, val_loader, spec.epochs, seed, callbacks,
                           select_best=False)
    losses = [h["train_loss"] for h in module.history if math.isfinite(h["train_loss"])]
    return LocalResult(arrays=model_arrays(net), num_examples=len(train),
                       train_loss=float(np.mean(losses)) if losses else float("nan"),
                       seconds=time.perf_counter() - start, epsilon=epsilon)


def _fit_private(module: ClassifierModule, loader, val_loader, spec: LocalTraining, seed: int,
                 dp: ClientDPConfig, rounds_done: int,
                 callbacks: Sequence[Callback] = ()) -> float:
    """DP-SGD local epochs; returns epsilon after ``rounds_done + 1`` rounds of them."""
    from medsec.privacy.config import DPConfig
    from medsec.privacy.dp import private_training
    from medsec.privacy.plan import plan_dp

    # a target epsilon is calibrated once for the whole federation (all rounds)
    plan = plan_dp(DPConfig.model_validate(dp.model_dump()), len(loader.dataset), len(loader),
                   spec.epochs * spec.total_rounds)
    with private_training(module, loader, plan) as (dp_loader, _state):
        fit_classifier(module, dp_loader, val_loader, spec.epochs, seed, callbacks,
                       select_best=False)
    return plan.epsilon(len(loader) * spec.epochs * (rounds_done + 1))
