"""Train and evaluate a classifier from a config: the core of the train/evaluate stages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from medsec.config import MedSecConfig
from medsec.data.types import ImageDataset, LoadedDataset
from medsec.metrics.classification import classification_metrics, confusion
from medsec.models.factory import PixelSpaceClassifier, build_classifier
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


def split_for(cfg: MedSecConfig, data: LoadedDataset, split: str) -> ImageDataset:
    """A split, truncated to ``dataset.max_train`` / ``dataset.max_eval`` when set."""
    limit = cfg.dataset.max_train if split == "train" else cfg.dataset.max_eval
    return data.splits[split].head(limit)


def channel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of images (N, C, H, W); std floored at 1e-3."""
    mean = images.mean(axis=(0, 2, 3)).astype(float).tolist()
    std = np.maximum(images.std(axis=(0, 2, 3)), 1e-3).astype(float).tolist()
    return mean, std


def model_meta(cfg: MedSecConfig, data: LoadedDataset) -> dict[str, Any]:
    """Everything needed to rebuild the network and trace its data (plain types)."""
    return {
        "model_name": cfg.model.name, "in_channels": data.in_channels,
        "num_classes": data.num_classes, "image_size": list(data.image_shape[1:]),
        "norm": cfg.model.norm, "dropout": cfg.model.dropout, "dataset": data.name,
        "data_version": data.version, "class_names": list(data.class_names), "seed": cfg.seed,
    }


def build_module(cfg: MedSecConfig, data: LoadedDataset) -> ClassifierModule:
    """Seeded network (normalisation from the training split) inside a ClassifierModule."""
    seed_everything(cfg.seed)
    mean, std = channel_stats(split_for(cfg, data, "train").images)
    net = build_classifier(
        cfg.model.name, data.in_channels, data.num_classes, data.image_shape[1:],
        mean=mean, std=std, norm=cfg.model.norm, dropout=cfg.model.dropout,
    )
    return ClassifierModule(
        net, data.num_classes, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay,
        optimizer=cfg.train.optimizer, augment=cfg.train.augment,
    )


def train_classifier(
    cfg: MedSecConfig,
    data: LoadedDataset,
    callbacks: Sequence[Callback] = (),
    progress: bool = False,
    module: ClassifierModule | None = None,
) -> TrainedClassifier:
    """Fit the configured classifier on ``train``, selecting on ``val`` (best val AUC).

    With ``privacy.dp.enabled`` it trains with DP-SGD (:func:`medsec.privacy.training.
    fit_private`); ``meta["privacy"]`` records the mechanism (epsilon, delta, accountant, ...).
    """
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    module = module if module is not None else build_module(cfg, data)
    train = make_loader(split_for(cfg, data, "train"), cfg.train.batch_size, True, cfg.seed)
    val = make_loader(split_for(cfg, data, "val"), 512, False, cfg.seed)
    if cfg.privacy.dp.enabled:
        from medsec.privacy.training import fit_private  # Opacus: imported only when used

        fit, privacy = fit_private(cfg, module, train, val, callbacks, progress)
    else:
        fit = fit_classifier(module, train, val, cfg.train.epochs, cfg.seed, callbacks,
                             select_best=cfg.train.select_best, progress=progress)
        privacy = {"mechanism": "none"}
    meta = model_meta(cfg, data) | {"best_epoch": fit.best_epoch,
                                    "num_train": len(train.dataset), "privacy": privacy}
    return TrainedClassifier(model=module.net, meta=meta, fit=fit)


def evaluate_classifier(
    model: torch.nn.Module, split: ImageDataset, num_classes: int, prefix: str = "test_"
) -> Evaluation:
    """Metrics (``{prefix}acc``, ``auc``, ``f1``, ``loss``, ``recall_class_k``) on a split."""
    images, labels = split.tensors()
    logits = predict_logits(model, images)
    metrics = classification_metrics(logits, labels, num_classes, prefix=prefix)
    return Evaluation(metrics, confusion(logits, labels, num_classes), logits)
