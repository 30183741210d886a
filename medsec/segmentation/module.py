"""Segmenter training in the project's one Lightning loop (``medsec.training.fit``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from monai.losses import DiceCELoss
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from medsec.segmentation.data import SegSplit
from medsec.segmentation.metrics import segmentation_metrics
from medsec.training.fit import KeepBestState, make_trainer, seed_everything


class SegmenterModule(L.LightningModule):
    """Dice + cross-entropy training of a dense ``net`` (pixel-space images -> logits
    (N, K, *S)). ``history`` holds one dict per epoch: ``epoch``, ``train_loss``, ``val_loss``,
    ``val_dice`` (mean foreground Dice on the validation split)."""

    def __init__(self, net: nn.Module, num_classes: int, lr: float = 1e-3,
                 weight_decay: float = 0.0) -> None:
        super().__init__()
        self.net = net
        self.num_classes = num_classes
        self.lr = lr
        self.weight_decay = weight_decay
        self.criterion = DiceCELoss(to_onehot_y=True, softmax=True)
        self.history: list[dict[str, float]] = []
        self._train_losses: list[float] = []
        self._val: list[tuple[torch.Tensor, torch.Tensor, float]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def loss(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Scalar Dice+CE of logits (N, K, *S) against class-index masks (N, *S)."""
        return self.criterion(logits, masks.unsqueeze(1))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.net.parameters(), lr=self.lr, weight_decay=self.weight_decay)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        images, masks = batch
        loss = self.loss(self.net(images), masks)
        self._train_losses.append(float(loss.detach()))
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, masks = batch
        logits = self.net(images)
        self._val.append((logits.argmax(1), masks, float(self.loss(logits, masks))))

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or not self._val:
            self._val.clear()
            return
        pred = torch.cat([v[0] for v in self._val])
        masks = torch.cat([v[1] for v in self._val])
        val_loss = sum(v[2] for v in self._val) / len(self._val)
        self._val.clear()
        dice = segmentation_metrics(pred, masks, self.num_classes)["dice"]
        train_loss = (sum(self._train_losses) / len(self._train_losses)
                      if self._train_losses else float("nan"))
        self._train_losses.clear()
        self.history.append({"epoch": float(self.current_epoch), "train_loss": train_loss,
                             "val_loss": val_loss, "val_dice": dice})
        self.log("val_dice", dice, prog_bar=True)


def seg_loader(split: SegSplit, batch_size: int, shuffle: bool, seed: int) -> DataLoader:
    """Batches of (images float32 (B, C, *S), masks int64 (B, *S))."""
    ds = TensorDataset(torch.from_numpy(split.images).float(),
                       torch.from_numpy(split.masks).long())
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=0,
                      generator=torch.Generator().manual_seed(seed))


@dataclass
class SegFitResult:
    history: list[dict[str, float]]
    best_epoch: int
    seconds: float


def fit_segmenter(module: SegmenterModule, train: SegSplit, val: SegSplit, epochs: int,
                  batch_size: int, seed: int, callbacks: Sequence[Callback] = ()) -> SegFitResult:
    """Train with the project's Trainer; restore the weights of the best ``val_dice`` epoch."""
    seed_everything(seed)
    keeper = KeepBestState(monitor="val_dice")
    trainer = make_trainer(epochs, [keeper, *callbacks])
    start = time.perf_counter()
    trainer.fit(module, train_dataloaders=seg_loader(train, batch_size, True, seed),
                val_dataloaders=seg_loader(val, 256, False, seed))
    seconds = time.perf_counter() - start
    if keeper.best_state is not None:
        module.net.load_state_dict(keeper.best_state)
    module.net.eval()
    return SegFitResult(list(module.history), keeper.best_epoch, seconds)


@torch.no_grad()
def predict_masks(model: nn.Module, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Class-index predictions (N, *S) in eval mode (training flags restored)."""
    from medsec.attacks.base import predict_logits

    return predict_logits(model, images, batch_size).argmax(1)
