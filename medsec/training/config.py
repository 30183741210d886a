"""The training package's own settings: the ``train`` section and a classifier recipe.

A :class:`ClassifierRecipe` is everything needed to train one classifier (network,
optimisation, seed, split limits); capability packages take it instead of the whole config.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from medsec.config_base import StrictModel
from medsec.models.config import ModelConfig

if TYPE_CHECKING:  # torch: kept out of the config import
    from medsec.data.types import ImageDataset, LoadedDataset


class TrainConfig(StrictModel):
    epochs: int = Field(default=5, gt=0, le=1000)
    batch_size: int = Field(default=64, gt=0)
    lr: float = Field(default=1e-3, gt=0.0, le=10.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    augment: bool = False
    select_best: bool = True
    num_threads: int | None = Field(default=None, gt=0)


class ClassifierRecipe(StrictModel):
    """Network + optimisation + seed + split limits (``max_train`` / ``max_eval``: None = all)."""

    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    seed: int = 0
    max_train: int | None = Field(default=None, gt=0)
    max_eval: int | None = Field(default=None, gt=0)

    def split(self, data: LoadedDataset, name: str) -> ImageDataset:
        """Split ``name`` of ``data``, truncated to ``max_train`` (train) / ``max_eval``."""
        return data.splits[name].head(self.max_train if name == "train" else self.max_eval)

    def derive(self, epochs: int | None = None, seed: int | None = None,
               whole_splits: bool = False) -> ClassifierRecipe:
        """A copy with ``train.epochs`` / ``seed`` replaced (None: unchanged) and, with
        ``whole_splits``, no split truncation."""
        update: dict = {}
        if epochs is not None:
            update["train"] = self.train.model_copy(update={"epochs": epochs})
        if seed is not None:
            update["seed"] = seed
        if whole_splits:
            update |= {"max_train": None, "max_eval": None}
        return self.model_copy(update=update)
