"""Data sources, splits and validation. Every source yields :class:`ImageDataset` splits."""

from medsec.data.types import SPLITS, ImageDataset, LoadedDataset

__all__ = ["SPLITS", "ImageDataset", "LoadedDataset"]
