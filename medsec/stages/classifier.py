"""Config -> classifier recipe and fit strategy (plain or DP-SGD), and the train/evaluate calls."""

from __future__ import annotations

from collections.abc import Sequence

from lightning.pytorch.callbacks import Callback

from medsec.config import MedSecConfig
from medsec.data.types import ImageDataset, LoadedDataset
from medsec.training.config import ClassifierRecipe
from medsec.training.job import FitStrategy, TrainedClassifier, train_classifier
from medsec.training.module import ClassifierModule


def recipe(cfg: MedSecConfig) -> ClassifierRecipe:
    """The classifier recipe of ``cfg``: ``model``, ``train``, ``seed`` and the split limits
    ``dataset.max_train`` / ``dataset.max_eval``."""
    return ClassifierRecipe(model=cfg.model, train=cfg.train, seed=cfg.seed,
                            max_train=cfg.dataset.max_train, max_eval=cfg.dataset.max_eval)


def split(cfg: MedSecConfig, data: LoadedDataset, name: str) -> ImageDataset:
    """Split ``name`` truncated to ``dataset.max_train`` / ``dataset.max_eval``."""
    return recipe(cfg).split(data, name)


def fit_strategy(cfg: MedSecConfig) -> FitStrategy:
    """DP-SGD when ``privacy.dp.enabled``, else the plain fit
    (:func:`medsec.privacy.training.fit_strategy`; Opacus imported only when called)."""
    from medsec.privacy.training import fit_strategy

    return fit_strategy(cfg.privacy.dp)


def train(cfg: MedSecConfig, data: LoadedDataset, callbacks: Sequence[Callback] = (),
          progress: bool = False, module: ClassifierModule | None = None) -> TrainedClassifier:
    """Train the configured classifier (DP-SGD with ``privacy.dp.enabled``)."""
    return train_classifier(recipe(cfg), data, callbacks, progress, module, fit_strategy(cfg))
