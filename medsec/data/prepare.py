"""The data stage's work: the raw source -> ``prepared/``, the dataset every later stage reads.

``prepared/`` holds ``<name>.npz`` (MedMNIST format, checked by loading it) and
``dataset.json``: name, data version (md5 of the npz), verification, source (relative to the
data root: never an absolute path), ``data_source`` (``phantoms``, ``medmnist``, ``folder``,
``manifest``, ``dicom``, ``nifti``, ``pacs``), split counts and ``key``, a hash of the settings
that select the data (:meth:`DataSource.key`). Own data (a folder or manifest, see
:mod:`medsec.data.sources`) adds per-split ``.npy`` images and pseudonymous patient keys. The
directory is replaced atomically, so a reader sees the old dataset or the new one, never a mix.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from medsec.data.medmnist import medmnist_file_name, resolve_data_dir
from medsec.data.phantoms import PHANTOM_FILE, PHANTOM_NAME, PhantomSpec
from medsec.data.registry import dataset_path, load_dataset_file
from medsec.data.sources.build import SourceSpec, load_own, write_own
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
    image_size: int | None = None  # MedMNIST+: <name>_<size>.npz
    own: SourceSpec | None = None  # own data (folder / manifest): replaces the rest
    memory_limit_mb: float = 2048.0

    def raw_file(self) -> Path | None:
        """The raw file the data comes from; None when phantoms are generated."""
        if self.name == PHANTOM_NAME:
            path = resolve_data_dir(self.data_dir) / PHANTOM_FILE
            return path if path.is_file() else None
        return dataset_path(self.name, self.data_dir, self.image_size)

    def data_source_tag(self) -> str:
        """The ``medsec.data_source`` tag: phantoms, medmnist, or the own source's kind."""
        if self.own is not None:
            return self.own.data_source_tag()
        return "phantoms" if self.name == PHANTOM_NAME else "medmnist"

    def key(self) -> str:
        """sha256 (hex) of the name, the raw file's path (as configured, so the same in every
        clone; the file need not exist any more) and, for generated phantoms, their settings:
        what selects the data. Own data: :meth:`SourceSpec.key` (settings and file list)."""
        if self.own is not None:
            return self.own.key()
        raw = (self.raw_file() if self.name == PHANTOM_NAME
               else resolve_data_dir(self.data_dir) / medmnist_file_name(self.name,
                                                                         self.image_size))
        record: dict[str, Any] = {"name": self.name, "source": str(raw) if raw else GENERATED}
        record |= {"phantoms": dataclasses.asdict(self.phantoms)} if raw is None else {}
        return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def prepare_dataset(source: DataSource, out_dir: str | Path) -> LoadedDataset:
    """Write ``out_dir/<name>.npz`` and ``out_dir/dataset.json`` for ``source`` (atomically)
    and return the dataset as later stages will load it."""
    out_dir = Path(out_dir)
    if source.own is not None:
        return _prepare_own(source, out_dir)
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
                "source": raw.name if raw else GENERATED, "key": key,
                "data_source": source.data_source_tag(),
                "image_size": int(data.image_shape[-1]), "channels": data.in_channels,
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
    if source.own is not None:
        return _located(load_own(Path(out_dir), info, source.memory_limit_mb), Path(out_dir),
                        info)
    data = load_dataset_file(source.name, Path(out_dir) / f"{source.name}.npz")
    if data.version != info["version"]:
        return prepare_dataset(source, out_dir)
    return _located(data, Path(out_dir), info)


def _prepare_own(source: DataSource, out_dir: Path) -> LoadedDataset:
    """Own data: :func:`write_own` into a fresh ``prepared/`` (atomically)."""
    assert source.own is not None
    key = source.own.key()
    with atomic_dir(out_dir) as tmp:
        own = write_own(source.own, tmp)
        counts = {split: own["patients"][split]["images"] for split in SPLITS}
        info = {**own, "verification": f"own data ({own['data_source']})", "synthetic": False,
                "key": key, "counts": counts}
        write_json(tmp / INFO_FILE, info)
    data = load_own(out_dir, info, source.memory_limit_mb)
    return _located(data, out_dir, info)


def _located(data: LoadedDataset, out_dir: Path, info: dict[str, Any]) -> LoadedDataset:
    return dataclasses.replace(
        data, source_path=str(out_dir / f"{data.name}.npz"),
        extra={**data.extra, "source": info["source"],
               "data_source": info.get("data_source", data.extra.get("data_source", ""))})
