"""Adversarial datasets on disk: a MedMNIST-like ``.npz`` plus a metadata ``.json``.

``<dir>/<attack>_eps<k>.npz`` (k = epsilon in grey levels, ``round(eps * 255)``) holds

- ``test_images``: float32 (N, H, W) for one channel or (N, H, W, C), in [0, 1] (float, not
  uint8 as in MedMNIST, so perturbations of one grey level and less survive);
- ``test_labels``: int64 (N, 1), the true labels; for multi-label data int64 (N, L), the
  multi-hot findings (as MedMNIST's ChestMNIST; the record's ``data.task`` is ``multilabel``);
- ``clean_indices``: int64 (N,), the position of each image in the source test split;
- ``target_labels``: int64 (N, 1), only for targeted attacks (and the image-scaling attack,
  multi-hot (N, L) on multi-label data).

``<dir>/<attack>_eps<k>.json`` records the attack, its resolved parameters, the epsilon, the
source model (checkpoint md5, MLflow run id) and the data (name, version). Read both with
:func:`load_adversarial`; other tools read the arrays with ``numpy.load(path)`` (keys as
above, channels last like MedMNIST) and the record with any JSON reader.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medsec.attacks.config import grey_levels
from medsec.attacks.results import TIMING_METRICS, AttackPoint, SuiteResult
from medsec.data.medmnist import read_npz_arrays
from medsec.errors import DataError
from medsec.io import atomic_dir, save_npz_deterministic, write_json

if TYPE_CHECKING:
    from medsec.data.types import LoadedDataset

FORMAT = "medsec-adversarial-v1"
REQUIRED_META = ("format", "attack", "params", "eps", "norm", "source_model", "data", "metrics")
"""Keys every metadata record has."""


@dataclass(frozen=True)
class AdversarialDataset:
    """A loaded adversarial dataset: images float32 (N, C, H, W) in [0, 1], labels (N,)
    (multi-label: multi-hot float32 (N, L)),
    ``clean_indices`` (N,) into the source test split, ``targets`` (N,) or None, metadata."""

    images: np.ndarray
    labels: np.ndarray
    clean_indices: np.ndarray
    targets: np.ndarray | None
    meta: dict[str, Any]

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def to_medmnist_layout(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (N, H, W) for one channel, else (N, H, W, C); float32."""
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {images.shape}")
    out = images[:, 0] if images.shape[1] == 1 else np.transpose(images, (0, 2, 3, 1))
    return np.ascontiguousarray(out, dtype=np.float32)


def from_medmnist_layout(images: np.ndarray) -> np.ndarray:
    """(N, H, W) or (N, H, W, C) -> (N, C, H, W)."""
    if images.ndim == 3:
        return images[:, None]
    if images.ndim == 4:
        return np.ascontiguousarray(np.transpose(images, (0, 3, 1, 2)))
    raise ValueError(f"images must be (N, H, W) or (N, H, W, C), got shape {images.shape}")


def save_adversarial(
    path: str | Path,
    images: np.ndarray,
    labels: np.ndarray,
    clean_indices: np.ndarray,
    meta: dict[str, Any],
    targets: np.ndarray | None = None,
) -> Path:
    """Write ``path`` (.npz) and its ``.json`` record; images (N, C, H, W) float in [0, 1],
    ``labels`` (N,) or multi-hot (N, L).

    The bytes depend only on the arrays and ``meta`` (deterministic zip, sorted JSON); ``meta``
    needs :data:`REQUIRED_META`.
    """
    path = Path(path)
    n = images.shape[0]
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise ValueError(f"adversarial metadata lacks {', '.join(missing)}")
    if labels.shape[:1] != (n,) or labels.ndim not in (1, 2) or clean_indices.shape != (n,):
        raise ValueError(
            f"labels must be ({n},) or multi-hot ({n}, L) and clean_indices ({n},), got "
            f"{labels.shape} {clean_indices.shape}"
        )
    if not np.isfinite(images).all() or images.min() < 0 or images.max() > 1:
        raise ValueError("adversarial images must be finite and lie in [0, 1]")
    arrays = {
        "test_images": to_medmnist_layout(images),
        "test_labels": labels.astype(np.int64).reshape(n, -1),
        "clean_indices": clean_indices.astype(np.int64),
    }
    if targets is not None:
        arrays["target_labels"] = targets.astype(np.int64).reshape(n, -1)
    save_npz_deterministic(path, arrays)
    write_json(
        path.with_suffix(".json"),
        meta | {"n_examples": int(n), "file": path.name, "arrays": sorted(arrays)},
    )
    return path


def load_adversarial(path: str | Path) -> AdversarialDataset:
    """Read an adversarial dataset written by :func:`save_adversarial` (clear DataErrors)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"adversarial dataset not found: {path}")
    arrays = read_npz_arrays(path)
    missing = [k for k in ("test_images", "test_labels", "clean_indices") if k not in arrays]
    if missing:
        raise DataError(f"{path}: missing array(s) {', '.join(missing)}")
    images = arrays["test_images"]
    if images.dtype != np.float32:
        raise DataError(f"{path}: test_images must be float32, got {images.dtype}")
    images = from_medmnist_layout(images)
    targets = arrays.get("target_labels")
    meta_path = path.with_suffix(".json")
    if not meta_path.is_file():
        raise DataError(f"{path}: its metadata record {meta_path.name} is missing")
    meta = json.loads(meta_path.read_text())
    raw = arrays["test_labels"]
    multilabel = (meta.get("data") or {}).get("task") == "multilabel"
    labels = (raw.astype(np.float32) if multilabel and raw.ndim == 2
              else raw.reshape(-1).astype(np.int64))
    if labels.shape[0] != images.shape[0] or arrays["clean_indices"].shape != labels.shape[:1]:
        raise DataError(f"{path}: images, labels and clean_indices disagree in length")
    return AdversarialDataset(
        images=images,
        labels=labels,
        clean_indices=arrays["clean_indices"].astype(np.int64),
        targets=None if targets is None else (
            targets.astype(np.float32) if multilabel and targets.ndim == 2
            else targets.reshape(-1).astype(np.int64)),
        meta=meta,
    )


def point_metadata(
    point: AttackPoint, source: dict[str, Any], data: LoadedDataset
) -> dict[str, Any]:
    """The record of one attack point: attack, resolved parameters, epsilon, the source
    model (``source``: checkpoint path/md5, MLflow run id, ...) and the data (name,
    version). Deterministic: no timings, no id of the attack run itself."""
    return {
        "format": FORMAT,
        "attack": point.spec.name,
        "id": point.spec.id,
        "params": point.params,
        "eps": point.eps,
        "eps_grey_levels": None if point.eps is None else grey_levels(point.eps),
        "norm": point.norm,
        "targeted": point.spec.targeted,
        "target_rule": "(label + 1) mod num_classes" if point.spec.targeted else None,
        "source_model": source,
        "data": {
            "name": data.name,
            "version": data.version,
            "split": "test",
            "verification": data.verification,
            "class_names": list(data.class_names),
            # multi-label data only (single-label records stay as they were)
            **({"task": "multilabel"} if getattr(data, "task", None) == "multilabel" else {}),
        },
        "metrics": {k: v for k, v in point.metrics.items() if k not in TIMING_METRICS},
    }


def write_suite(directory: str | Path, result: SuiteResult, source: dict[str, Any],
                data: LoadedDataset, save: bool = True) -> list[dict[str, Any]]:
    """Replace ``directory`` with one dataset per attack and epsilon (when ``save``), the
    image-scaling attack images, and an ``index.json`` listing them; all or nothing.
    Returns the index entries."""
    index = []
    with atomic_dir(directory) as tmp:
        for point in result.points:
            meta = point_metadata(point, source, data)
            if save:
                save_adversarial(tmp / f"{point.name}.npz", point.adversarial, result.labels,
                                 result.indices, meta, point.targets)
            index.append({"name": point.name, "attack": point.spec.name, "id": point.spec.id,
                          "eps": point.eps, "file": f"{point.name}.npz" if save else None,
                          "robust_acc": point.metrics["robust_acc"]})
        demo = result.image_scaling
        if save and demo is not None:
            meta = {
                "format": FORMAT,
                "attack": "image_scaling",
                "id": "image_scaling",
                "params": {"source_size": int(demo.source.shape[-1]),
                           "target_size": list(demo.target.shape[2:])},
                "eps": None,
                "norm": "l2",
                "source_model": source,
                "data": {"name": data.name, "version": data.version, "split": "test"},
                "note": "test_images are the large attack images, test_labels the source "
                "labels, target_labels what the resize->classifier pipeline sees",
                "metrics": {k: v for k, v in demo.metrics.items() if k not in TIMING_METRICS},
            }
            save_adversarial(tmp / "image_scaling.npz", demo.adversarial, demo.source_labels,
                             demo.source_indices, meta, demo.target_labels)
            index.append({"name": "image_scaling", "attack": "image_scaling",
                          "id": "image_scaling", "eps": None, "file": "image_scaling.npz",
                          "robust_acc": None})
        write_json(tmp / "index.json",
                   {"format": FORMAT, "source_model": source, "datasets": index})
    return index
