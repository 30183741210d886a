"""The data stage's work: the raw source -> ``prepared/``, the dataset every later stage reads.

``prepared/`` holds ``<name>.npz`` (MedMNIST format, checked by loading it) and
``dataset.json``: name, data version (md5 of the npz), verification, source, split counts and
``key``, a hash of the settings that select the data (:meth:`DataSource.key`). The directory
is replaced atomically, so a reader sees the old dataset or the new one, never a mix.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from medsec.data.medmnist import resolve_data_dir
from medsec.data.phantoms import PHANTOM_FILE, PHANTOM_NAME, PhantomSpec
from medsec.data.registry import dataset_path, load_dataset_file
from medsec.data.types import SPLITS, LoadedDataset
from medsec.io import atomic_dir, write_json

INFO_FILE = "dataset.json"
GENERATED = "generated from the phantoms settings"


@dataclasses.dataclass(frozen=True)
class DataSource:
    """Which data to prepare.

    ``name``: ``phantoms`` or a MedMNIST 2D subset; ``data_dir``: the raw folder as configured
    (``$MEDSEC_DATA_DIR`` overrides it); ``phantoms``: the generation settings, used when
    ``name`` is ``phantoms`` and the raw folder holds no ``phantoms.npz`` (a fixed set).
    """

    name: str
    data_dir: str
    phantoms: PhantomSpec = PhantomSpec()

    def raw_file(self) -> Path | None:
        """The raw file the data comes from; None when phantoms are generated."""
        if self.name == PHANTOM_NAME:
            path = resolve_data_dir(self.data_dir) / PHANTOM_FILE
            return path if path.is_file() else None
        return dataset_path(self.name, self.data_dir)

    def key(self) -> str:
        """sha256 (hex) of the name, the raw file's path (as configured, so the same in every
        clone; the file need not exist any more) and, for generated phantoms, their settings:
        what selects the data."""
        raw = (self.raw_file() if self.name == PHANTOM_NAME
               else resolve_data_dir(self.data_dir) / f"{self.name}.npz")
        record: dict[str, Any] = {"name": self.name, "source": str(raw) if raw else GENERATED}
        record |= {"phantoms": dataclasses.asdict(self.phantoms)} if raw is None else {}
        return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def prepare_dataset(source: DataSource, out_dir: str | Path) -> LoadedDataset:
    """Write ``out_dir/<name>.npz`` and ``out_dir/dataset.json`` for ``source`` (atomically)
    and return the dataset as later stages will load it."""
    out_dir = Path(out_dir)
    raw = source.raw_file()
    key = source.key()
    with atomic_dir(out_dir) as tmp:
        target = tmp / f"{source.name}.npz"
        if raw is None:
            source.phantoms.write(target)
        else:
            shutil.copyfile(raw, target)
        data = load_dataset_file(source.name, target)  # every integrity check of the loaders
        info = {"name": data.name, "version": data.version,
                "verification": data.verification, "synthetic": data.synthetic,
                "source": str(raw) if raw else GENERATED, "key": key,
                "counts": {split: len(data.splits[split]) for split in SPLITS}}
        write_json(tmp / INFO_FILE, info)
    return _located(data, out_dir, info)


def read_info(out_dir: str | Path) -> dict[str, Any] | None:
    """``dataset.json`` of a prepared directory (None when absent or unreadable)."""
    try:
        return json.loads((Path(out_dir) / INFO_FILE).read_text())
    except (OSError, ValueError):
        return None


def load_prepared(source: DataSource, out_dir: str | Path) -> LoadedDataset:
    """The prepared dataset in ``out_dir``; prepared first when missing or prepared for
    other settings (``key`` mismatch), so a stage run without the data stage still works."""
    info = read_info(out_dir)
    if info is None or info.get("key") != source.key() or info.get("name") != source.name:
        return prepare_dataset(source, out_dir)
    data = load_dataset_file(source.name, Path(out_dir) / f"{source.name}.npz")
    if data.version != info["version"]:
        return prepare_dataset(source, out_dir)
    return _located(data, Path(out_dir), info)


def _located(data: LoadedDataset, out_dir: Path, info: dict[str, Any]) -> LoadedDataset:
    return dataclasses.replace(data, source_path=str(out_dir / f"{data.name}.npz"),
                               extra={**data.extra, "source": info["source"]})
