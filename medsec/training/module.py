"""The one LightningModule base (classifiers and segmenters), with hooks that defenses and DP
plug into."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from medsec.metrics.classification import classification_metrics

# (model, images (N,C,H,W) in [0,1], labels (N,)) -> (images, labels) used for the step.
Batch = tuple[torch.Tensor, torch.Tensor]
BatchTransform = Callable[[nn.Module, torch.Tensor, torch.Tensor], Batch]
# (model, images, labels) -> scalar training loss (replaces the cross-entropy, e.g. TRADES).
LossHook = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def random_shift(images: torch.Tensor, max_shift: int = 2) -> torch.Tensor:
    """Augmentation: shift each image by up to ``max_shift`` pixels (edge padding)."""
    n, _, h, w = images.shape
    padded = F.pad(images, (max_shift,) * 4, mode="replicate")
    dy = torch.randint(0, 2 * max_shift + 1, (n,))
    dx = torch.randint(0, 2 * max_shift + 1, (n,))
    rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).view(n, 1, h, 1)
    cols = (dx.view(n, 1) + torch.arange(w).view(1, w)).view(n, 1, 1, w)
    idx_n = torch.arange(n).view(n, 1, 1, 1)
    return padded[idx_n, torch.arange(images.shape[1]).view(1, -1, 1, 1), rows, cols]


def classification_loss(logits: torch.Tensor, targets: torch.Tensor,
                        reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy for int labels (N,) against logits (N, K); for multi-hot float targets
    (N, L) in {0, 1} (several findings per image) binary cross-entropy with logits, averaged
    over the L findings per image (``reduction="none"``: (N,))."""
    if targets.ndim == 2:
        loss = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype),
                                                  reduction="none").mean(dim=1)
        return loss if reduction == "none" else loss.mean() if reduction == "mean" else loss.sum()
    return F.cross_entropy(logits, targets, reduction=reduction)


class SupervisedModule(L.LightningModule):
    """The one training step for every supervised model (classifiers and segmenters).

    ``net`` maps pixel-space images (N, C, *S) in [0, 1] to logits: (N, K) for a classifier,
    (N, K, *S) for a segmenter. Subclasses give :meth:`default_loss` and :meth:`epoch_metrics`.
    Hooks: ``batch_transform`` replaces a training batch (adversarial training, noise
    augmentation); ``loss_fn`` replaces the default loss (TRADES, distillation);
    ``external_optimizer`` (set by DP training) replaces the optimizer.
    ``history`` holds one dict per epoch: ``epoch``, ``train_loss`` and the validation metrics.
    """

    monitored: tuple[str, ...] = ()
    """Validation metrics shown in the progress bar."""

    def __init__(self, net: nn.Module, num_classes: int, lr: float = 1e-3,
                 weight_decay: float = 0.0, optimizer: str = "adam", augment: bool = False,
                 batch_transform: BatchTransform | None = None,
                 loss_fn: LossHook | None = None) -> None:
        super().__init__()
        self.net = net
        self.num_classes = num_classes
        self.lr = lr
        self.weight_decay = weight_decay
        self.optimizer_name = optimizer
        self.augment = augment
        self.batch_transform = batch_transform
        self.loss_fn = loss_fn
        self.external_optimizer: torch.optim.Optimizer | None = None
        self.history: list[dict[str, float]] = []
        self._val_logits: list[torch.Tensor] = []
        self._val_labels: list[torch.Tensor] = []
        self._train_losses: list[torch.Tensor] = []

    # ------------------------------------------------------------------ subclass contract

    def default_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Scalar training loss of logits against targets (labels or masks)."""
        raise NotImplementedError

    def epoch_metrics(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        """Validation metrics (``val_*``) of the whole validation split's logits."""
        raise NotImplementedError

    def augment_batch(self, images: torch.Tensor, targets: torch.Tensor) -> Batch:
        """Augmentation when ``augment`` is set (default: none)."""
        return images, targets

    # ------------------------------------------------------------------ Lightning

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def build_optimizer(self, params=None) -> torch.optim.Optimizer:
        params = self.net.parameters() if params is None else params
        if self.optimizer_name == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=0.9,
                                   weight_decay=self.weight_decay)
        cls = torch.optim.AdamW if self.optimizer_name == "adamw" else torch.optim.Adam
        return cls(params, lr=self.lr, weight_decay=self.weight_decay)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.external_optimizer is not None:
            return self.external_optimizer
        return self.build_optimizer()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        images, labels = batch
        if len(labels) == 0:  # DP-SGD's Poisson sampling can draw an empty batch: its noise-only
            return self.net(images).sum()  # step must still run; zero loss, no train_loss entry
        if self.augment:
            images, labels = self.augment_batch(images, labels)
        if self.batch_transform is not None:
            images, labels = self.batch_transform(self.net, images, labels)
        loss = (self.loss_fn(self.net, images, labels) if self.loss_fn is not None
                else self.default_loss(self.net(images), labels))
        self._train_losses.append(loss.detach())  # stays on the device: no sync per step
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        self._val_logits.append(self.net(images).detach())
        self._val_labels.append(labels)

    def on_validation_epoch_end(self) -> None:
        logits, labels = self._val_logits, self._val_labels
        self._val_logits, self._val_labels = [], []
        if self.trainer.sanity_checking or not logits:
            return
        logits, labels = torch.cat(logits), torch.cat(labels)
        losses = (torch.stack(self._train_losses).float().mean() if self._train_losses
                  else torch.tensor(float("nan"), device=logits.device))
        self._train_losses.clear()
        if self.trainer.world_size > 1:  # DDP: every rank scores the whole validation split
            logits, labels = (self.all_gather(t).flatten(0, 1) for t in (logits, labels))
            losses = self.trainer.strategy.reduce(losses, reduce_op="mean")
        metrics = self.epoch_metrics(logits.float(), labels)
        train_loss = float(losses)
        record = {"epoch": float(self.current_epoch), "train_loss": train_loss, **metrics}
        self.history.append(record)
        for key in self.monitored:
            self.log(key, metrics[key], prog_bar=True)  # same value on every rank


class ClassifierModule(SupervisedModule):
    """Cross-entropy training of a classifier ``net`` (images -> logits (N, K); BCE for
    multi-hot labels (N, L), see :func:`classification_loss`); ``augment``
    shifts images by up to 2 pixels. Validation metrics: ``val_acc``, ``val_auc``,
    ``val_loss``, ... (see :func:`classification_metrics`)."""

    monitored = ("val_acc", "val_auc", "val_loss")

    def default_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of int labels (N,); BCE-with-logits of multi-hot targets (N, L)."""
        return classification_loss(logits, targets)

    def epoch_metrics(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        return classification_metrics(logits, targets, self.num_classes, prefix="val_")

    def augment_batch(self, images: torch.Tensor, targets: torch.Tensor) -> Batch:
        return random_shift(images), targets
