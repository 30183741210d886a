"""Train and evaluate a classifier from a :class:`ClassifierRecipe`.

The fit itself is a strategy plugged in from outside (:data:`FitStrategy`): :func:`plain_fit`
by default; DP-SGD (``medsec.privacy.training.DPStrategy``) is chosen by the stage layer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader

from medsec.data.types import ImageDataset, LoadedDataset
from medsec.metrics.classification import classification_metrics, confusion
from medsec.models.factory import PixelSpaceClassifier, build_classifier
from medsec.training.config import ClassifierRecipe
from medsec.training.fit import FitResult, fit_classifier, make_loader, seed_everything
from medsec.training.module import ClassifierModule
from medsec.training.predict import predict_logits


@dataclass
class TrainedClassifier:
    model: PixelSpaceClassifier
    meta: dict[str, Any]
    fit: FitResult


@dataclass
class Evaluation:
    metrics: dict[str, float]
    confusion: np.ndarray
    logits: torch.Tensor


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of images (N, C, H, W); std floored at 1e-3."""
    mean = images.mean(axis=(0, 2, 3)).astype(float).tolist()
    std = np.maximum(images.std(axis=(0, 2, 3)), 1e-3).astype(float).tolist()
    return mean, std


FitStrategy = Callable[
    [ClassifierModule, DataLoader, DataLoader, ClassifierRecipe, Sequence[Callback], bool],
    tuple[FitResult, dict[str, Any]],
]
"""``(module, train_loader, val_loader, recipe, callbacks, progress) -> (fit, privacy record)``:
how a classifier is fitted (plain, DP-SGD, ...). The record goes to ``meta["privacy"]``; its
``selection`` (when given) is the model selection, else ``recipe.train.select_best``'s."""

BEST_VAL, LAST_EPOCH = "best validation AUC", "last epoch"
"""``meta["selection"]``: the released weights are the best validation epoch's (validation
images then influenced the model) or the last epoch's (validation never touched it)."""


def plain_fit(module: ClassifierModule, train: DataLoader, val: DataLoader,
              recipe: ClassifierRecipe, callbacks: Sequence[Callback] = (),
              progress: bool = False) -> tuple[FitResult, dict[str, Any]]:
    """Non-private fit for ``recipe.train.epochs`` (best val AUC when ``select_best``)."""
    fit = fit_classifier(module, train, val, recipe.train.epochs, recipe.seed, callbacks,
                         select_best=recipe.train.select_best, progress=progress,
                         hardware=recipe.train.hardware())
    return fit, {"mechanism": "none"}


def model_meta(recipe: ClassifierRecipe, data: LoadedDataset) -> dict[str, Any]:
    """Everything needed to rebuild the network and trace its data (plain types)."""
    return {
        "model_name": recipe.model.name, "in_channels": data.in_channels,
        "num_classes": data.num_classes, "image_size": list(data.image_shape[1:]),
        "norm": recipe.model.norm, "dropout": recipe.model.dropout, "dataset": data.name,
        "data_version": data.version, "class_names": list(data.class_names),
        "seed": recipe.seed, "task": data.task,
    }


def build_module(recipe: ClassifierRecipe, data: LoadedDataset) -> ClassifierModule:
    """Seeded network (normalisation from the training split) inside a ClassifierModule."""
    seed_everything(recipe.seed)
    mean, std = channel_stats(recipe.split(data, "train").images)
    net = build_classifier(recipe.model.name, data.in_channels, data.num_classes,
                           data.image_shape[1:], mean=mean, std=std, norm=recipe.model.norm,
                           dropout=recipe.model.dropout)
    train = recipe.train
    return ClassifierModule(net, data.num_classes, lr=train.lr, weight_decay=train.weight_decay,
                            optimizer=train.optimizer, augment=train.augment)


def train_classifier(recipe: ClassifierRecipe, data: LoadedDataset,
                     callbacks: Sequence[Callback] = (), progress: bool = False,
                     module: ClassifierModule | None = None,
                     strategy: FitStrategy = plain_fit) -> TrainedClassifier:
    """Fit ``recipe``'s classifier on ``train``, selecting on ``val`` (best val AUC), with
    ``strategy`` (plain by default); ``meta["privacy"]`` is the strategy's record."""
    if recipe.train.num_threads:
        torch.set_num_threads(recipe.train.num_threads)
    module = module if module is not None else build_module(recipe, data)
    train = make_loader(recipe.split(data, "train"), recipe.train.batch_size, True, recipe.seed)
    val = make_loader(recipe.split(data, "val"), 512, False, recipe.seed)
    fit, privacy = strategy(module, train, val, recipe, callbacks, progress)
    selection = privacy.get("selection", BEST_VAL if recipe.train.select_best else LAST_EPOCH)
    meta = model_meta(recipe, data) | {"best_epoch": fit.best_epoch, "selection": selection,
                                       "num_train": len(train.dataset), "privacy": privacy,
                                       "device": fit.device, "precision": fit.precision}
    return TrainedClassifier(model=module.net, meta=meta, fit=fit)


def evaluate_classifier(model: torch.nn.Module, split: ImageDataset, num_classes: int,
                        prefix: str = "test_") -> Evaluation:
    """Metrics (``{prefix}acc``, ``auc``, ``f1``, ``loss``, ``recall_class_k``) on a split."""
    images, labels = split.tensors()
    logits = predict_logits(model, images)
    metrics = classification_metrics(logits, labels, num_classes, prefix=prefix)
    return Evaluation(metrics, confusion(logits, labels, num_classes), logits)
