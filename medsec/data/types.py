"""In-memory dataset types shared by every data source."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import TensorDataset

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ImageDataset:
    """One split: images float32 in [0, 1] of shape (N, C, H, W); labels int64 of shape (N,)
    (multi-label own data: multi-hot float32 (N, L) in {0, 1}, one column per finding).

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
    def task(self) -> str:
        """``multilabel`` (multi-hot (N, L) labels: several findings per image) or
        ``multiclass`` (one int class per image)."""
        return "multilabel" if np.asarray(self.splits["train"].labels).ndim == 2 else "multiclass"

    @property
    def in_channels(self) -> int:
        return int(self.splits["train"].images.shape[1])

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.splits["train"].images.shape[1:])


class TensorImageDataset(TensorDataset):
    """A torch Dataset view of an :class:`ImageDataset`: items (image float32 (C, H, W), label
    int64). Memory-mapped images (a C-ordered ``.npy`` opened with ``mmap_mode``) are streamed:
    each item is read from the file with ``os.pread``, so the process never maps the whole
    data set (its resident memory stays at about one batch)."""

    def __init__(self, data: ImageDataset) -> None:
        labels = torch.from_numpy(np.ascontiguousarray(data.labels))
        images = data.images
        self.stream: tuple[str, int, int, tuple[int, ...], np.dtype] | None = None
        if (isinstance(images, np.memmap) and images.filename is not None
                and images.flags.c_contiguous):
            item = int(np.prod(images.shape[1:])) * images.dtype.itemsize
            root = images  # slices keep the file's offset: add their distance from the root
            while isinstance(root.base, np.memmap):
                root = root.base
            start = int(root.offset) + images.ctypes.data - root.ctypes.data
            self.stream = (str(images.filename), start, item,
                           tuple(images.shape[1:]), images.dtype)
            tensor = torch.empty((len(labels), 0))
        else:
            tensor = torch.from_numpy(np.ascontiguousarray(images))
        self._fd: int | None = None
        self._pid: int | None = None
        super().__init__(tensor, labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.stream is None:
            return super().__getitem__(index)
        path, offset, item, shape, dtype = self.stream
        if self._fd is None or self._pid != os.getpid():  # one descriptor per worker process
            self._fd, self._pid = os.open(path, os.O_RDONLY), os.getpid()
        raw = os.pread(self._fd, item, offset + int(index) * item)
        image = np.frombuffer(raw, dtype=dtype).reshape(shape).copy()
        return torch.from_numpy(image), self.tensors[1][index]
