"""Your own images (a class folder or a manifest) -> the ``prepared/`` dataset, and back.

``prepared/`` of an own-data source holds:

- ``<split>_images.npy``: float32 (N, C, S, S) in [0, 1] per split, appended image by image
  (preparing never holds the data set in memory) and read back whole
  when the three files together fit ``memory_limit_mb``, else memory-mapped (stages stream
  the pages they touch);
- ``<name>.npz``: per split ``labels`` int64 (N,) (a multi-label manifest, ``labels`` column
  ``"a|b"``: multi-hot float32 (N, L) in {0, 1}, one column per finding), and the
  pseudonymous ``patient``, ``study`` and ``site`` keys (str, N)
  (never the raw identifiers, never file paths);
- ``dataset.json`` (written by :mod:`medsec.data.prepare`) with :func:`write_own`'s record.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medsec.data.sources.pseudonym import make_pseudonymizer
from medsec.data.sources.readers import ReadSettings, load_image
from medsec.data.sources.records import (
    Record,
    file_suffix,
    folder_records,
    is_multi_label,
    manifest_records,
)
from medsec.data.splits import patient_splits, split_counts
from medsec.data.types import SPLITS, ImageDataset, LoadedDataset
from medsec.errors import DataError
from medsec.io import file_digest, save_npz_deterministic

PACS_MARKER = "pacs_pull.json"
"""A file ``medsec data pull`` leaves in the folder it fills: the source is tagged ``pacs``."""


@dataclass(frozen=True)
class SourceSpec:
    """An own-data source: ``kind`` ``folder`` or ``manifest``; ``root`` the folder (or the
    manifest file), ``path`` as configured (what is recorded: relative to the data root)."""

    kind: str
    name: str
    root: Path
    path: str
    read: ReadSettings = ReadSettings()
    classes: tuple[str, ...] | None = None
    memory_limit_mb: float = 2048.0
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    _cache: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def data_root(self) -> Path:
        """The folder every image path is relative to (a manifest's own folder)."""
        return self.root if self.kind == "folder" else self.root.parent

    def records(self) -> list[Record]:
        if "records" not in self._cache:
            self._cache["records"] = (folder_records(self.root) if self.kind == "folder"
                                      else manifest_records(self.root))
        return self._cache["records"]

    def data_source_tag(self) -> str:
        """``pacs`` (pulled by ``medsec data pull``), ``dicom`` / ``nifti`` (every file of
        that format), else ``folder`` / ``manifest``."""
        if (self.data_root / PACS_MARKER).is_file():
            return "pacs"
        suffixes = {file_suffix(r.path) for r in self.records()}
        if suffixes == {".dcm"}:
            return "dicom"
        if suffixes and suffixes <= {".nii", ".nii.gz"}:
            return "nifti"
        return self.kind

    def key(self) -> str:
        """sha256 of the settings and of every file's (relative path, size) and manifest row.

        No modification times: a fresh checkout (``dvc pull``, ``dvc exp run --temp``) must
        find the prepared data current; DVC hashes the raw folder's content and reruns the
        data stage when a file changes."""
        listing = []
        for record in self.records():
            listing.append((record.path, os.stat(record.file).st_size, record.labels,
                            record.patient, record.study, record.site, record.split))
        settings = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                    if f.name not in ("_cache", "root")}
        blob = json.dumps({"settings": settings, "root": str(self.root), "files": listing},
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()


def _class_names(spec: SourceSpec, records: list[Record], multilabel: bool = False
                 ) -> list[str]:
    """The class (multi-label: finding) names: ``dataset.classes`` or the sorted labels seen."""
    multi = [r for r in records if len(r.labels) != 1]
    if multi and not multilabel:
        raise DataError(f"{multi[0].path}: {len(multi[0].labels)} labels in the 'label' column; "
                        "several findings per image need the 'labels' column (\"a|b\")")
    if spec.classes:
        known = set(spec.classes)
        for record in records:
            for label in record.labels:
                if label not in known:
                    raise DataError(f"{record.path}: unknown label {label!r}; "
                                    f"dataset.classes: {', '.join(spec.classes)}")
        return list(spec.classes)
    names = sorted({label for r in records for label in r.labels})
    if len(names) < 2:
        raise DataError(f"{spec.path}: only {len(names)} class ({', '.join(names)}); a "
                        "classifier needs at least 2")
    return names


def _targets(records: list[Record], classes: list[str], multilabel: bool
             ) -> tuple[np.ndarray, list[int]]:
    """Labels to store and the split strata: int64 (N,) class indices, or multi-hot float32
    (N, L) in {0, 1} (stratum: the first finding, L when none)."""
    index = {name: i for i, name in enumerate(classes)}
    if not multilabel:
        labels = [index[r.labels[0]] for r in records]
        return np.asarray(labels, np.int64), labels
    hot = np.zeros((len(records), len(classes)), np.float32)
    for i, record in enumerate(records):
        hot[i, [index[label] for label in record.labels]] = 1.0
    strata = [int(row.argmax()) if row.any() else len(classes) for row in hot]
    return hot, strata


def write_own(spec: SourceSpec, out: Path) -> dict[str, Any]:
    """Read, split and write ``spec``'s images into ``out`` (see module docstring); returns
    the record for ``dataset.json``: name, source (relative), data_source, class names, image
    size, channels, split counts (images, patients), pseudonymisation method, storage."""
    records = spec.records()
    multilabel = spec.kind == "manifest" and is_multi_label(spec.root)
    classes = _class_names(spec, records, multilabel)
    targets, labels = _targets(records, classes, multilabel)
    pseudo, method = make_pseudonymizer()
    patients = [pseudo("patient", r.patient) for r in records]
    studies = [pseudo("study", f"{r.patient}/{r.study}") for r in records]
    sites = [pseudo("site", r.site) if r.site else "" for r in records]
    assigned = patient_splits(patients, labels, [r.split for r in records], spec.val_fraction,
                              spec.test_fraction, spec.seed)
    counts = split_counts(assigned, patients)
    empty = [s for s in SPLITS if counts[s]["images"] == 0]
    if empty:
        raise DataError(f"{spec.path}: empty split(s) {', '.join(empty)} after the patient-level "
                        f"split of {len(set(patients))} patient(s); add patients or set the "
                        "manifest split column")
    size, channels = spec.read.image_size, spec.read.channels
    arrays: dict[str, np.ndarray] = {}
    for split in SPLITS:
        members = [i for i, s in enumerate(assigned) if s == split]
        shape = (len(members), channels, size, size)
        with open(out / f"{split}_images.npy", "wb") as handle:  # appended image by image:
            np.lib.format.write_array_header_1_0(handle, {  # no page of the set stays resident
                "descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                "fortran_order": False, "shape": shape})
            for i in members:
                handle.write(np.ascontiguousarray(load_image(records[i], spec.read)).tobytes())
        arrays[f"{split}_labels"] = targets[np.asarray(members, np.int64)]
        for key, values in (("patient", patients), ("study", studies), ("site", sites)):
            arrays[f"{split}_{key}"] = np.asarray([values[i] for i in members], dtype="<U17")
    save_npz_deterministic(out / f"{spec.name}.npz", arrays)
    return {"name": spec.name, "source": spec.path, "data_source": spec.data_source_tag(),
            "class_names": classes, "task": "multilabel" if multilabel else "multiclass",
            "image_size": size, "channels": channels,
            "patients": counts, "pseudonymisation": method,
            "sites": len({s for s in sites if s}), "version": own_version(out, spec.name)}


def own_version(out: Path, name: str) -> str:
    """md5 (hex) over the digests of the prepared files: the data version."""
    parts = [file_digest(out / f"{split}_images.npy") for split in SPLITS]
    parts.append(file_digest(out / f"{name}.npz"))
    return hashlib.md5("".join(parts).encode()).hexdigest()


def load_own(out: Path, info: dict[str, Any], memory_limit_mb: float) -> LoadedDataset:
    """The prepared own-data set: in memory when the images fit ``memory_limit_mb``, else
    memory-mapped float32 arrays (read-only)."""
    name = info["name"]
    files = [out / f"{split}_images.npy" for split in SPLITS]
    total_mb = sum(f.stat().st_size for f in files) / 2**20
    mmap = "r" if total_mb > memory_limit_mb else None
    try:
        with np.load(out / f"{name}.npz", allow_pickle=False) as meta:
            arrays = {k: meta[k] for k in meta.files}
        splits = {}
        for split, path in zip(SPLITS, files, strict=True):
            images = np.load(path, mmap_mode=mmap, allow_pickle=False)
            splits[split] = ImageDataset(
                images, arrays[f"{split}_labels"], patient_ids=arrays[f"{split}_patient"],
                study_ids=arrays[f"{split}_study"], site_ids=arrays[f"{split}_site"])
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{out.name}/: prepared own-data files unreadable ({exc}); rerun the "
                        "data stage") from None
    return LoadedDataset(
        name=name, splits=splits, num_classes=len(info["class_names"]),
        class_names=list(info["class_names"]), source_path=str(out / f"{name}.npz"),
        version=info["version"], verification=f"own data ({info['data_source']})",
        extra={"data_source": info["data_source"],
               "storage": "memmap" if mmap else "memory"})
