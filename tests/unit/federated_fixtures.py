"""A tiny, easy, in-memory binary task for federated tests (seconds per federation)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from medsec.data.types import ImageDataset, LoadedDataset
from medsec.federated.config import FederatedConfig
from medsec.models.config import ModelConfig
from medsec.training.config import ClassifierRecipe, TrainConfig

SIZE = 16


def _split(n: int, rng: np.random.Generator) -> ImageDataset:
    """Class 1 has a bright left half, class 0 a bright right half; noise on top."""
    labels = (np.arange(n) % 2).astype(np.int64)
    images = rng.random((n, 1, SIZE, SIZE)).astype(np.float32) * 0.5
    images[labels == 1, :, :, : SIZE // 2] += 0.5
    images[labels == 0, :, :, SIZE // 2:] += 0.5
    return ImageDataset(np.clip(images, 0.0, 1.0), labels)


def in_memory_dataset(split: Callable[[int, np.random.Generator], ImageDataset], n_train: int,
                      n_eval: int, seed: int, name: str, class_names: list[str],
                      version: str) -> LoadedDataset:
    """A synthetic :class:`LoadedDataset` whose train/val/test splits ``split`` draws
    (``n_train``, ``n_eval``, ``n_eval`` images) from one seeded generator."""
    rng = np.random.default_rng(seed)
    splits = {"train": split(n_train, rng), "val": split(n_eval, rng),
              "test": split(n_eval, rng)}
    return LoadedDataset(name=name, splits=splits, num_classes=len(class_names),
                         class_names=class_names, source_path="<memory>",
                         version=version, verification="synthetic", synthetic=True)


def tiny_dataset(n_train: int = 160, n_eval: int = 80, seed: int = 0) -> LoadedDataset:
    return in_memory_dataset(_split, n_train, n_eval, seed, "phantoms", ["right", "left"],
                             "tiny")


# The tiny federation of the federated flow tests (phantoms, 2 hospitals, 1 round).
FLOW_OVERRIDES = ["federated.num_clients=2", "federated.rounds=1", "train.batch_size=32",
                  "train.num_threads=1", "model.name=small_cnn", "model.norm=group",
                  "federated.compare_centralized=false"]


def tiny_settings(norm: str = "batch", **federated) -> tuple[FederatedConfig, ClassifierRecipe]:
    """Settings for :func:`tiny_dataset`: small_cnn (``norm``), batch 32, lr 3e-3, one thread."""
    fed = FederatedConfig.model_validate({"compare_centralized": False, **federated})
    recipe = ClassifierRecipe(model=ModelConfig(norm=norm),
                              train=TrainConfig(batch_size=32, lr=3e-3, num_threads=1))
    return fed, recipe
