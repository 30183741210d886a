"""Records: one row per image of a folder or a manifest, every path checked to stay inside the
data root.

A :class:`Record` names an image by its path RELATIVE to the data root (never absolute: that
is what errors, reports and MLflow may show) and carries its label(s), patient, study, site
and (manifests only) a fixed split. Folder layout::

    <root>/<class>/<patient>/[<study>/]<image>   patient (and study) from the sub-folders
    <root>/<class>/<image>                       every image its own patient (no grouping)

Manifest columns (CSV or Parquet): ``path`` (relative to the manifest's folder), ``label``
(one class) or ``labels`` (several, ``"a|b"``), and optional ``patient_id``, ``study_id``,
``site``, ``split`` (``train``/``val``/``test``, empty = assigned by the patient-level split).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from medsec.data.types import SPLITS
from medsec.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".nii", ".nii.gz", ".dcm")
LABEL_SEPARATOR = "|"


@dataclass(frozen=True)
class Record:
    """One image: ``path`` relative to ``root``; ``labels`` class names (one unless
    multi-label); ``patient``/``study``/``site`` raw identifiers (pseudonymised before they
    are written); ``split`` fixed by the manifest or None."""

    root: Path
    path: str
    labels: tuple[str, ...]
    patient: str
    study: str
    site: str = ""
    split: str | None = None

    @property
    def file(self) -> Path:
        return self.root / self.path

    @property
    def suffix(self) -> str:
        return file_suffix(self.path)


def file_suffix(path: str | Path) -> str:
    """``.nii.gz`` for gzipped NIfTI, else the lower-case last suffix (``.png``)."""
    name = str(path).lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def inside_root(root: Path, relative: str) -> Path:
    """``root / relative`` after checking it exists and that it and every symlink on the way
    resolve inside ``root`` (DataError naming ``relative`` otherwise)."""
    base = root.resolve()
    path = base / relative
    if not os.path.lexists(path):
        raise DataError(f"{relative}: file not found under the data root")
    resolved = path.resolve()
    if not resolved.is_relative_to(base):
        raise DataError(f"{relative}: is a symlink leaving the data root (refused)")
    if not resolved.is_file():
        raise DataError(f"{relative}: not a regular file")
    return resolved


def folder_records(root: Path) -> list[Record]:
    """The images under ``root/<class>/...`` (hidden files and other suffixes skipped)."""
    if not root.is_dir():
        raise DataError(f"{root.name}: image folder not found (dataset.path)")
    records: list[Record] = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith(".") or file_suffix(name) not in IMAGE_SUFFIXES:
                    continue
                rel = Path(dirpath, name).relative_to(root)
                inside_root(root, str(rel))
                parts = rel.parts  # (class, [patient, [study, ...]], file)
                patient = parts[1] if len(parts) > 2 else str(rel)
                study = parts[2] if len(parts) > 3 else patient
                records.append(Record(root, str(rel), (parts[0],), patient, study))
    if not records:
        raise DataError(f"{root.name}: no images ({', '.join(IMAGE_SUFFIXES)}) in "
                        "<class>/ sub-folders")
    return records


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path.name}: manifest not found (dataset.path)")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:  # noqa: BLE001 - pandas/pyarrow raise many types
        raise DataError(f"{path.name}: not a readable CSV/Parquet manifest: {exc}") from exc


def _cell(row: pd.Series, column: str) -> str:
    value = row.get(column, "")
    return "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)


def manifest_records(manifest: Path) -> list[Record]:
    """The rows of a CSV/Parquet manifest as records (paths relative to its folder)."""
    table = _read_table(manifest)
    name = manifest.name
    if "path" not in table.columns or not ({"label", "labels"} & set(table.columns)):
        raise DataError(f"{name}: needs columns 'path' and 'label' (or 'labels'); found "
                        f"{', '.join(map(str, table.columns)) or 'none'}")
    root = manifest.parent
    records = []
    for number, row in table.iterrows():
        rel = _cell(row, "path").strip()
        where = f"{name} row {int(number) + 2}"  # +2: header line, 1-based
        if not rel:
            raise DataError(f"{where}: empty path")
        if Path(rel).is_absolute():
            raise DataError(f"{where}: path {rel!r} must be relative to the manifest's folder")
        try:
            inside_root(root, rel)
        except DataError as exc:
            raise DataError(f"{where}: {exc}") from None
        raw = _cell(row, "labels") if "labels" in table.columns else _cell(row, "label")
        labels = tuple(x.strip() for x in raw.split(LABEL_SEPARATOR) if x.strip())
        if not labels and "labels" not in table.columns:
            raise DataError(f"{where} ({rel}): empty label")
        split = _cell(row, "split").strip().lower() or None
        if split is not None and split not in SPLITS:
            raise DataError(f"{where} ({rel}): split {split!r} is not one of {', '.join(SPLITS)}")
        patient = _cell(row, "patient_id").strip() or rel
        study = _cell(row, "study_id").strip() or patient
        records.append(Record(root, rel, labels, patient, study, _cell(row, "site").strip(),
                              split))
    if not records:
        raise DataError(f"{name}: the manifest has no rows")
    return records


def is_multi_label(manifest: Path) -> bool:
    """Whether a manifest uses the multi-label ``labels`` column."""
    return "labels" in _read_table(manifest).columns
