"""The one training loop: a seeded, deterministic CPU Lightning Trainer."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader

from medsec.data.types import ImageDataset, TensorImageDataset
from medsec.training.module import SupervisedModule


class KeepBestState(Callback):
    """Keep an in-memory copy of the weights with the best validation score."""

    def __init__(self, monitor: str = "val_auc") -> None:
        self.monitor = monitor
        self.best_score = -float("inf")
        self.best_epoch = -1
        self.best_state: dict[str, torch.Tensor] | None = None

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: SupervisedModule) -> None:
        # Runs after the epoch's validation (and after the module appended its history).
        if not pl_module.history:
            return
        record = pl_module.history[-1]
        score = record.get(self.monitor, float("nan"))
        if not np.isfinite(score):  # e.g. AUC undefined on a one-class validation split
            score = record.get("val_acc", float("nan"))
        if score > self.best_score:
            self.best_score = float(score)
            self.best_epoch = int(record["epoch"])
            self.best_state = copy.deepcopy(pl_module.net.state_dict())


@dataclass
class FitResult:
    history: list[dict[str, float]]
    best_epoch: int
    seconds: float


def make_loader(data: ImageDataset, batch_size: int, shuffle: bool, seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(TensorImageDataset(data), batch_size=batch_size, shuffle=shuffle,
                      generator=generator, num_workers=0)


def seed_everything(seed: int) -> None:
    L.seed_everything(seed, workers=True, verbose=False)
    torch.use_deterministic_algorithms(True, warn_only=True)


def make_trainer(epochs: int, callbacks: Sequence[Callback] = (),
                 progress: bool = False) -> L.Trainer:
    """The project's Trainer: CPU, deterministic, no logger/checkpoints/sanity validation."""
    return L.Trainer(
        accelerator="cpu", devices=1, max_epochs=epochs, deterministic=True, logger=False,
        enable_checkpointing=False, enable_progress_bar=progress, enable_model_summary=False,
        num_sanity_val_steps=0, callbacks=list(callbacks),
    )


def fit_module(module: SupervisedModule, train_loader: DataLoader, val_loader: DataLoader,
               epochs: int, seed: int, callbacks: Sequence[Callback] = (), select_best: bool = True,
               progress: bool = False, monitor: str = "val_auc") -> FitResult:
    """Train ``module`` (classifier or segmenter) for ``epochs`` in the project's Trainer; with
    ``select_best`` restore the weights of the epoch with the best ``monitor`` metric."""
    import time

    seed_everything(seed)
    keeper = KeepBestState(monitor)
    trainer = make_trainer(epochs, [keeper, *callbacks], progress)
    start = time.perf_counter()
    trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader)
    seconds = time.perf_counter() - start
    if select_best and keeper.best_state is not None:
        module.net.load_state_dict(keeper.best_state)
    best_epoch = keeper.best_epoch if select_best else epochs - 1
    module.net.eval()
    return FitResult(history=list(module.history), best_epoch=best_epoch, seconds=seconds)


fit_classifier = fit_module
"""Classifiers use :func:`fit_module` as it is: selection on validation AUC (accuracy where
the AUC is undefined)."""
