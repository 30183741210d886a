"""Config -> data-stage settings: which dataset, from where, generated how, at what size."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from medsec.config import MedSecConfig
from medsec.data.medmnist import resolve_data_dir
from medsec.data.phantoms import PHANTOM_NAME, PhantomSpec
from medsec.data.prepare import DataSource
from medsec.data.sources.build import SourceSpec
from medsec.data.sources.readers import ReadSettings

OWN_DEFAULT_SIZE = 224
"""``dataset.image_size`` of own data when unset (px)."""


def own_source(cfg: MedSecConfig) -> SourceSpec | None:
    """The ``dataset`` section as an own-data :class:`SourceSpec` (None for ``source: auto``):
    ``path`` relative to ``data_dir`` ($MEDSEC_DATA_DIR overrides it) unless absolute."""
    ds = cfg.dataset
    if ds.source == "auto" or ds.path is None:
        return None
    root = Path(ds.path).expanduser()
    recorded = ds.path if not root.is_absolute() else root.name  # never an absolute path
    if not root.is_absolute():
        root = resolve_data_dir(ds.data_dir) / root
    read = ReadSettings(image_size=ds.image_size or OWN_DEFAULT_SIZE, channels=ds.channels or 1,
                        intensity=ds.intensity, window=ds.window, max_pixels=ds.max_pixels)
    return SourceSpec(kind=ds.source, name=ds.name, root=root, path=recorded, read=read,
                      classes=tuple(ds.classes) if ds.classes else None,
                      memory_limit_mb=ds.memory_limit_mb, val_fraction=ds.val_fraction,
                      test_fraction=ds.test_fraction, seed=cfg.seed)


def data_source(cfg: MedSecConfig) -> DataSource:
    """The ``dataset`` and ``phantoms`` sections as the data package's :class:`DataSource`
    (``dataset.image_size``, when set, is the phantoms' size and picks MedMNIST+ files)."""
    ds = cfg.dataset
    phantoms = PhantomSpec(**cfg.phantoms.model_dump())
    if ds.image_size and ds.name == PHANTOM_NAME:
        phantoms = dataclasses.replace(phantoms, size=ds.image_size)
    return DataSource(ds.name, ds.data_dir, phantoms, image_size=ds.image_size,
                      own=own_source(cfg), memory_limit_mb=ds.memory_limit_mb)


def data_source_tag(cfg: MedSecConfig) -> str:
    """The ``medsec.data_source`` tag of every run: ``phantoms``, ``medmnist``, ``folder``,
    ``manifest``, ``dicom``, ``nifti`` or ``pacs`` (own data: from the files' formats)."""
    ds = cfg.dataset
    if ds.source == "auto":
        return "phantoms" if ds.name == PHANTOM_NAME else "medmnist"
    try:
        return data_source(cfg).data_source_tag()
    except Exception:  # noqa: BLE001 - an unreadable source fails in the stage, not the tag
        return ds.source


def effective_image_size(cfg: MedSecConfig) -> int:
    """The side length (px) the images have: ``dataset.image_size`` when set, else the
    phantoms' size, MedMNIST's 28 or :data:`OWN_DEFAULT_SIZE` for own data."""
    ds = cfg.dataset
    if ds.image_size:
        return int(ds.image_size)
    if ds.source != "auto":
        return OWN_DEFAULT_SIZE
    return int(cfg.phantoms.size) if ds.name == PHANTOM_NAME else 28


ABSOLUTE = "<absolute path, not logged>"


def logged_dataset_params(cfg: MedSecConfig) -> dict[str, object]:
    """``dataset.*`` params as every run logs them: ``image_size`` as used
    (:func:`effective_image_size`); an absolute ``data_dir`` replaced by :data:`ABSOLUTE` and
    an absolute ``path`` by its last component (a user's folder names never reach MLflow)."""
    ds = cfg.dataset
    params: dict[str, object] = {"dataset.image_size": effective_image_size(cfg)}
    if Path(ds.data_dir).expanduser().is_absolute():
        params["dataset.data_dir"] = ABSOLUTE
    if ds.path and Path(ds.path).expanduser().is_absolute():
        params["dataset.path"] = Path(ds.path).name
    return params


def phantom_source(cfg: MedSecConfig) -> DataSource:
    """The phantoms (they carry lesion masks) whatever ``dataset.name`` is: what the 2D
    segmentation stage (``segmentation.data: phantoms``) reads."""
    return dataclasses.replace(data_source(cfg), name=PHANTOM_NAME, own=None)
