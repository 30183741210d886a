"""Dataset names -> loaders. The one entry point: :func:`load_dataset`."""

from __future__ import annotations

from pathlib import Path

from medsec.data.medmnist import MEDMNIST_2D, find_medmnist_file, load_medmnist, resolve_data_dir
from medsec.data.phantoms import PHANTOM_FILE, PHANTOM_NAME, load_phantoms
from medsec.data.types import LoadedDataset
from medsec.errors import DataError


def known_dataset_names() -> list[str]:
    return [PHANTOM_NAME, *MEDMNIST_2D]


def dataset_path(name: str, data_dir: str | Path, size: int | None = None) -> Path:
    """The file a dataset name is read from (raises DataError with advice when missing);
    ``size`` picks a MedMNIST+ file (``<name>_<size>.npz``)."""
    if name == PHANTOM_NAME:
        path = resolve_data_dir(data_dir) / PHANTOM_FILE
        if not path.is_file():
            raise DataError(
                f"synthetic phantom file not found: {path.resolve()}\n"
                f"  `medsec stage data` generates the phantoms from the `phantoms` params into "
                f"prepared/; `medsec data init --phantoms` writes a fixed set here.")
        return path
    if name not in MEDMNIST_2D:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(known_dataset_names())}")
    return find_medmnist_file(name, data_dir, size)


def load_dataset(name: str, data_dir: str | Path) -> LoadedDataset:
    """Load all splits of dataset ``name`` from ``data_dir`` ($MEDSEC_DATA_DIR overrides it):
    images float32 [0,1] (N,C,H,W); labels int64."""
    return load_dataset_file(name, dataset_path(name, data_dir))


def load_dataset_file(name: str, path: str | Path) -> LoadedDataset:
    """Load dataset ``name`` from the ``.npz`` file ``path`` (no directory lookup)."""
    if name == PHANTOM_NAME:
        return load_phantoms(path)
    return load_medmnist(name, path)
