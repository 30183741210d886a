"""Train a classifier on derived data (synthetic, real-vs-fake, ...) with the project's loop.

Every classifier the DeepFake stage trains (train-on-synthetic, detectors, the attacker's
surrogate) goes through :func:`medsec.training.job.train_classifier` with the stage's
:class:`~medsec.training.config.ClassifierRecipe`: its MONAI network in ``ClassifierModule`` +
``fit_classifier``, normalisation from its training split, weights selected on its validation
split.
"""

from __future__ import annotations

from medsec.data.types import ImageDataset, LoadedDataset
from medsec.models.factory import PixelSpaceClassifier
from medsec.training.config import ClassifierRecipe
from medsec.training.job import train_classifier


def fit_on(
    recipe: ClassifierRecipe, train: ImageDataset, val: ImageDataset, class_names: list[str],
    name: str, epochs: int | None = None, seed: int | None = None,
) -> PixelSpaceClassifier:
    """Train ``recipe`` on the whole of ``train`` (select on ``val``) for ``epochs`` (None:
    ``recipe.train.epochs``) with ``seed`` (None: ``recipe.seed``); returns the network in eval
    mode. ``name`` labels the derived dataset (e.g. ``"pneumoniamnist-synthetic"``).
    """
    if len(train) == 0 or len(val) == 0:
        raise ValueError(f"{name}: empty training or validation split")
    data = LoadedDataset(name=name, splits={"train": train, "val": val, "test": val},
                         num_classes=len(class_names), class_names=list(class_names),
                         source_path="<derived>", version="derived", verification="derived",
                         synthetic=True)
    run = recipe.derive(epochs=epochs, seed=seed, whole_splits=True)
    return train_classifier(run, data).model.eval()
