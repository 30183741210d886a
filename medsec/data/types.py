"""In-memory dataset types shared by every data source."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import TensorDataset

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ImageDataset:
    """One split: images float32 in [0, 1] of shape (N, C, H, W); labels int64 of shape (N,).

    ``masks`` (optional) are integer segmentation masks of the images' spatial shape: (N, H, W)
    for (N, C, H, W) images, (N, D, H, W) for (N, C, D, H, W) volumes. ``images`` may be a
    read-only ``np.memmap`` (own data larger than ``dataset.memory_limit_mb``).

    ``patient_ids`` / ``study_ids`` / ``site_ids`` (optional, str (N,)): PSEUDONYMOUS keys of
    own data (``P``/``S``/``T`` + 16 hex digits; ``""`` when unknown), for patient-level
    membership inference and one federated client per site.
    """

    images: np.ndarray
    labels: np.ndarray
    masks: np.ndarray | None = None
    patient_ids: np.ndarray | None = None
    study_ids: np.ndarray | None = None
    site_ids: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def head(self, n: int | None) -> ImageDataset:
        """The first ``n`` examples (all when ``n`` is None)."""
        if n is None or n >= len(self):
            return self

        def cut(values: np.ndarray | None) -> np.ndarray | None:
            return None if values is None else values[:n]

        return ImageDataset(self.images[:n], self.labels[:n], cut(self.masks),
                            cut(self.patient_ids), cut(self.study_ids), cut(self.site_ids))

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(self.images), torch.from_numpy(self.labels)


@dataclass(frozen=True)
class LoadedDataset:
    """All splits of a dataset plus what is known about where it came from."""

    name: str
    splits: dict[str, ImageDataset]
    num_classes: int
    class_names: list[str]
    source_path: str
    version: str  # md5 of the source file: the data version logged with every run
    verification: str  # "verified", "unverified (...)" or "synthetic"
    synthetic: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def in_channels(self) -> int:
        return int(self.splits["train"].images.shape[1])

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.splits["train"].images.shape[1:])


class TensorImageDataset(TensorDataset):
    """A torch Dataset view of an :class:`ImageDataset`: items (image float32 (C, H, W), label
    int64). Memory-mapped images are read item by item (streamed), never loaded whole."""

    def __init__(self, data: ImageDataset) -> None:
        labels = torch.from_numpy(np.ascontiguousarray(data.labels))
        self.stream = data.images if isinstance(data.images, np.memmap) else None
        images = (torch.empty((len(labels), 0)) if self.stream is not None
                  else torch.from_numpy(np.ascontiguousarray(data.images)))
        super().__init__(images, labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.stream is None:
            return super().__getitem__(index)
        return torch.from_numpy(np.array(self.stream[index])), self.tensors[1][index]
