"""A tiny, easy, in-memory binary task for federated tests (seconds per federation)."""

from __future__ import annotations

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


def tiny_dataset(n_train: int = 160, n_eval: int = 80, seed: int = 0) -> LoadedDataset:
    rng = np.random.default_rng(seed)
    splits = {"train": _split(n_train, rng), "val": _split(n_eval, rng),
              "test": _split(n_eval, rng)}
    return LoadedDataset(name="phantoms", splits=splits, num_classes=2,
                         class_names=["right", "left"], source_path="<memory>",
                         version="tiny", verification="synthetic", synthetic=True)


def tiny_settings(norm: str = "batch", **federated) -> tuple[FederatedConfig, ClassifierRecipe]:
    """Settings for :func:`tiny_dataset`: small_cnn (``norm``), batch 32, lr 3e-3, one thread."""
    fed = FederatedConfig.model_validate({"compare_centralized": False, **federated})
    recipe = ClassifierRecipe(model=ModelConfig(norm=norm),
                              train=TrainConfig(batch_size=32, lr=3e-3, num_threads=1))
    return fed, recipe
