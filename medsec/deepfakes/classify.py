"""Train a classifier on derived data (synthetic, real-vs-fake, ...) with the project's loop.

Every classifier the DeepFake stage trains (train-on-synthetic, detectors, the attacker's
surrogate) goes through :func:`medsec.training.job.train_classifier`: the configured MONAI
network in ``ClassifierModule`` + ``fit_classifier``, normalisation from its training split,
weights selected on its validation split.
"""

from __future__ import annotations

from medsec.config import MedSecConfig
from medsec.data.types import ImageDataset, LoadedDataset
from medsec.models.factory import PixelSpaceClassifier
from medsec.training.job import train_classifier


def derived_config(cfg: MedSecConfig, epochs: int | None, seed: int) -> MedSecConfig:
    """``cfg`` with ``train.epochs`` (None: unchanged), ``seed``, no split truncation and no
    thread setting of its own (the stage's thread count stays in force)."""
    update: dict[str, object] = {"num_threads": None}
    if epochs is not None:
        update["epochs"] = epochs
    train = cfg.train.model_copy(update=update)
    dataset = cfg.dataset.model_copy(update={"max_train": None, "max_eval": None})
    return cfg.model_copy(update={"train": train, "dataset": dataset, "seed": seed})


def fit_on(
    cfg: MedSecConfig, train: ImageDataset, val: ImageDataset, class_names: list[str],
    name: str, epochs: int | None = None, seed: int | None = None,
) -> PixelSpaceClassifier:
    """Train ``cfg.model`` on ``train`` (select on ``val``); returns the network in eval mode.

    ``name`` labels the derived dataset (e.g. ``"pneumoniamnist-synthetic"``).
    """
    if len(train) == 0 or len(val) == 0:
        raise ValueError(f"{name}: empty training or validation split")
    data = LoadedDataset(
        name=name, splits={"train": train, "val": val, "test": val},
        num_classes=len(class_names), class_names=list(class_names), source_path="<derived>",
        version="derived", verification="derived", synthetic=True,
    )
    run_cfg = derived_config(cfg, epochs, cfg.seed if seed is None else seed)
    return train_classifier(run_cfg, data).model.eval()
