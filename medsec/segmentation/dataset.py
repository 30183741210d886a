"""Adversarial segmentation datasets on disk (like :mod:`medsec.attacks.dataset`).

``<dir>/<attack>.npz`` holds ``test_images`` float32 (N, C, *S) in [0, 1] (adversarial),
``test_masks`` int64 (N, *S) (true masks), ``target_masks`` int64 (N, *S) (targets; the true
masks for untargeted attacks), ``pred_masks`` int64 (N, *S) (the model's prediction on the
adversarial images) and ``clean_indices`` int64 (N,) into the source test split.
``<dir>/<attack>.json`` records the attack, its parameters, the source model and data, and
the metrics (timings left out so the file is reproducible). :func:`load_seg_adversarial`
reads them back (e.g. to score another segmenter on them: transfer).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medsec.data.medmnist import read_npz_arrays
from medsec.errors import DataError
from medsec.io import save_npz_deterministic, write_json
from medsec.segmentation.job import SegAttackResult

FORMAT = "medsec-adversarial-segmentation-v1"


def save_seg_adversarial(directory: str | Path, result: SegAttackResult,
                         source: dict[str, Any]) -> dict[str, str]:
    """Write the ``.npz`` and ``.json`` of one attack; returns their paths."""
    directory = Path(directory)
    name = result.spec.name
    arrays = {"test_images": result.adversarial.numpy().astype(np.float32),
              "test_masks": result.masks.numpy().astype(np.int64),
              "target_masks": result.targets.numpy().astype(np.int64),
              "pred_masks": result.pred_adv.numpy().astype(np.int64),
              "clean_indices": np.asarray(result.indices, dtype=np.int64)}
    npz = save_npz_deterministic(directory / f"{name}.npz", arrays)
    meta = {"format": FORMAT, "attack": name, "params": result.spec.model_dump(mode="json"),
            "source": source,
            "metrics": {k: v for k, v in result.metrics.items() if k != "seconds"}}
    js = write_json(directory / f"{name}.json", meta)
    return {"npz": str(npz), "json": str(js)}


@dataclass(frozen=True)
class SegAdversarialSet:
    """A loaded adversarial segmentation dataset (see the module docstring for the arrays)."""

    images: np.ndarray
    masks: np.ndarray
    targets: np.ndarray
    clean_indices: np.ndarray
    meta: dict[str, Any]

    def __len__(self) -> int:
        return int(self.images.shape[0])


def load_seg_adversarial(path: str | Path) -> SegAdversarialSet:
    """Read ``<attack>.npz`` (and its ``.json``) written by :func:`save_seg_adversarial`.

    Raises DataError naming the file for a missing/corrupt file, missing arrays, wrong dtypes,
    shapes that disagree, pixels outside [0, 1], or a missing or foreign metadata record.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"adversarial segmentation dataset not found: {path}")
    arrays = read_npz_arrays(path)
    missing = [k for k in ("test_images", "test_masks", "target_masks", "clean_indices")
               if k not in arrays]
    if missing:
        raise DataError(f"{path}: missing array(s) {', '.join(missing)}")
    images, masks = arrays["test_images"], arrays["test_masks"]
    if images.dtype != np.float32 or images.ndim not in (4, 5):
        raise DataError(f"{path}: test_images must be float32 (N, C, *S), got {images.dtype} "
                        f"{images.shape}")
    n, spatial = images.shape[0], images.shape[2:]
    for key in ("test_masks", "target_masks"):
        if arrays[key].shape != (n, *spatial) or not np.issubdtype(arrays[key].dtype,
                                                                   np.integer):
            raise DataError(f"{path}: {key} must be integer masks of shape {(n, *spatial)}, "
                            f"got {arrays[key].dtype} {arrays[key].shape}")
    if arrays["clean_indices"].shape != (n,):
        raise DataError(f"{path}: clean_indices must have shape ({n},)")
    if images.size and (not np.isfinite(images).all() or images.min() < 0 or images.max() > 1):
        raise DataError(f"{path}: test_images must be finite and lie in [0, 1]")
    meta_path = path.with_suffix(".json")
    if not meta_path.is_file():
        raise DataError(f"{path}: its metadata record {meta_path.name} is missing")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise DataError(f"{meta_path}: format {meta.get('format')!r} is not {FORMAT!r}")
    return SegAdversarialSet(images, masks.astype(np.int64),
                             arrays["target_masks"].astype(np.int64),
                             arrays["clean_indices"].astype(np.int64), meta)
