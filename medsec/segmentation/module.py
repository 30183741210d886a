"""Segmenter training: the project's one LightningModule base and training loop
(:class:`medsec.training.module.SupervisedModule`, :func:`medsec.training.fit.fit_module`)
with a Dice + cross-entropy loss and Dice as the selection metric."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from lightning.pytorch.callbacks import Callback
from monai.losses import DiceCELoss
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from medsec.segmentation.data import SegSplit
from medsec.segmentation.metrics import segmentation_metrics
from medsec.training.fit import FitResult, fit_module
from medsec.training.module import SupervisedModule


class SegmenterModule(SupervisedModule):
    """Dice + cross-entropy training of a dense ``net`` (images (N, C, *S) in [0, 1] ->
    logits (N, K, *S)) against class-index masks (N, *S). Validation metrics per epoch:
    ``val_loss`` and ``val_dice`` (mean foreground Dice). All hooks of the base apply
    (``batch_transform`` for adversarial training of segmenters, ``loss_fn``)."""

    monitored = ("val_dice",)

    def __init__(self, net: nn.Module, num_classes: int, lr: float = 1e-3, **kwargs) -> None:
        super().__init__(net, num_classes, lr=lr, **kwargs)
        self.criterion = DiceCELoss(to_onehot_y=True, softmax=True)

    def default_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Scalar Dice+CE of logits (N, K, *S) against class-index masks (N, *S)."""
        return self.criterion(logits, targets.unsqueeze(1))

    def epoch_metrics(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        dice = segmentation_metrics(logits.argmax(1), targets, self.num_classes)["dice"]
        return {"val_loss": float(self.default_loss(logits, targets)), "val_dice": dice}


def seg_loader(split: SegSplit, batch_size: int, shuffle: bool, seed: int) -> DataLoader:
    """Batches of (images float32 (B, C, *S), masks int64 (B, *S))."""
    ds = TensorDataset(torch.from_numpy(split.images).float(),
                       torch.from_numpy(split.masks).long())
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, num_workers=0,
                      generator=torch.Generator().manual_seed(seed))


def fit_segmenter(module: SegmenterModule, train: SegSplit, val: SegSplit, epochs: int,
                  batch_size: int, seed: int, callbacks: Sequence[Callback] = ()) -> FitResult:
    """Train in the project's loop; restore the weights of the best ``val_dice`` epoch."""
    return fit_module(module, seg_loader(train, batch_size, True, seed),
                      seg_loader(val, 256, False, seed), epochs, seed, callbacks,
                      monitor="val_dice")


@torch.no_grad()
def predict_masks(model: nn.Module, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Class-index predictions (N, *S) in eval mode (training flags restored)."""
    from medsec.training.predict import predict_logits

    return predict_logits(model, images, batch_size).argmax(1)
