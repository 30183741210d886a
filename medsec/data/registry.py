"""Dataset names -> loaders. The one entry point: :func:`load_dataset`."""

from __future__ import annotations

from pathlib import Path

from medsec.data.medmnist import MEDMNIST_2D, find_medmnist_file, load_medmnist
from medsec.data.phantoms import PHANTOM_FILE, PHANTOM_NAME, load_phantoms
from medsec.data.types import LoadedDataset
from medsec.errors import DataError


def known_dataset_names() -> list[str]:
    return [PHANTOM_NAME, *MEDMNIST_2D]


def dataset_path(name: str, data_dir: str | Path) -> Path:
    """The file a dataset name is read from (raises DataError with advice when missing)."""
    if name == PHANTOM_NAME:
        from medsec.data.medmnist import resolve_data_dir

        path = resolve_data_dir(data_dir) / PHANTOM_FILE
        if not path.is_file():
            raise DataError(
                f"synthetic phantom file not found: {path.resolve()}\n"
                f"  Generate it with `medsec data init` (deterministic, offline)."
            )
        return path
    return find_medmnist_file(name, data_dir)


def load_dataset(name: str, data_dir: str | Path) -> LoadedDataset:
    """Load all splits of dataset ``name`` (images float32 [0,1] N,C,H,W; labels int64)."""
    if name == PHANTOM_NAME:
        return load_phantoms(dataset_path(name, data_dir))
    if name in MEDMNIST_2D:
        return load_medmnist(name, data_dir)
    raise DataError(f"unknown dataset {name!r}; known: {', '.join(known_dataset_names())}")
