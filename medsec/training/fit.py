"""The one training loop: a seeded, deterministic Lightning Trainer on the configured hardware.

:class:`~medsec.training.config.Hardware` (the ``train`` keys ``accelerator``, ``devices``,
``precision``, ``strategy``) picks the device: ``auto`` (default) is a GPU when torch sees one,
else the CPU. With ``devices: N`` and ``strategy: ddp`` Lightning starts N processes (gloo on
the CPU, NCCL on GPUs) by re-running the command line: call the fit from a script with an
``if __name__ == "__main__":`` guard. Validation metrics are gathered from every rank, so all
ranks select the same epoch and end with identical weights.
"""

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
from medsec.errors import ConfigError
from medsec.training.config import Hardware, default_hardware
from medsec.training.devices import resolve_accelerator
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
    device: str = "cpu"
    """Resolved accelerator (``cpu``/``gpu``), with ``x<devices>`` under DDP (e.g. ``cpu x2``)."""
    precision: str = "32"


def make_loader(data: ImageDataset, batch_size: int, shuffle: bool, seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(TensorImageDataset(data), batch_size=batch_size, shuffle=shuffle,
                      generator=generator, num_workers=0)


def seed_everything(seed: int) -> None:
    L.seed_everything(seed, workers=True, verbose=False)
    torch.use_deterministic_algorithms(True, warn_only=True)


def trainer_hardware(hardware: Hardware | None = None) -> dict:
    """Lightning Trainer keywords (accelerator, devices, precision, strategy, deterministic)
    of ``hardware`` (None: the process default, :func:`~medsec.training.config.use_hardware`).

    ConfigError naming the ``train`` key: ``gpu`` without a GPU, ``16-mixed`` on the CPU.
    """
    hw = hardware if hardware is not None else default_hardware()
    accelerator = resolve_accelerator(hw.accelerator, hw.devices)
    if accelerator == "cpu" and hw.precision == "16-mixed":
        raise ConfigError("train.precision: 16-mixed (float16 autocast) needs a GPU; use "
                          "bf16-mixed or 32 on the CPU")
    strategy = "auto" if hw.devices == 1 else "ddp"
    return {"accelerator": accelerator, "devices": hw.devices, "precision": hw.precision,
            "strategy": strategy,
            # cuDNN/cuBLAS have ops without a deterministic kernel: warn there instead of fail
            "deterministic": True if accelerator == "cpu" else "warn"}


def make_trainer(epochs: int, callbacks: Sequence[Callback] = (),
                 progress: bool = False, hardware: Hardware | None = None) -> L.Trainer:
    """The project's Trainer on ``hardware`` (None: the process default): deterministic, no
    logger/checkpoints/sanity validation."""
    return L.Trainer(
        max_epochs=epochs, logger=False, enable_checkpointing=False,
        enable_progress_bar=progress, enable_model_summary=False, num_sanity_val_steps=0,
        callbacks=list(callbacks), **trainer_hardware(hardware),
    )


def fit_module(module: SupervisedModule, train_loader: DataLoader, val_loader: DataLoader,
               epochs: int, seed: int, callbacks: Sequence[Callback] = (), select_best: bool = True,
               progress: bool = False, monitor: str = "val_auc",
               hardware: Hardware | None = None) -> FitResult:
    """Train ``module`` (classifier or segmenter) for ``epochs`` in the project's Trainer on
    ``hardware`` (None: the process default); with ``select_best`` restore the weights of the
    epoch with the best ``monitor`` metric. The net stays on the training device (rank's device
    under DDP), in eval mode."""
    import time

    seed_everything(seed)
    keeper = KeepBestState(monitor)
    trainer = make_trainer(epochs, [keeper, *callbacks], progress, hardware)
    start = time.perf_counter()
    trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader)
    seconds = time.perf_counter() - start
    if select_best and keeper.best_state is not None:
        module.net.load_state_dict(keeper.best_state)
    best_epoch = keeper.best_epoch if select_best else epochs - 1
    module.net.eval()
    device = trainer.accelerator.__class__.__name__.replace("Accelerator", "").lower()
    device = {"cuda": "gpu"}.get(device, device)
    if trainer.world_size > 1:
        device = f"{device} x{trainer.world_size}"
    return FitResult(history=list(module.history), best_epoch=best_epoch, seconds=seconds,
                     device=device, precision=str(trainer.precision).replace("-true", ""))


fit_classifier = fit_module
"""Classifiers use :func:`fit_module` as it is: selection on validation AUC (accuracy where
the AUC is undefined)."""
