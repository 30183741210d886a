"""Fingerprints: the facts about every image and split, computed once, that GX validates.

:func:`image_table` gives one row per image (label, shape, dtype, pixel statistics, a content
hash, mask statistics); :func:`class_table` one row per (split, label) with its count and
fraction; :func:`mask_stats` the per-split mask summary for the report.

Content hash: SHA-1 of the image quantised to uint8, ``clip(rint(x * 255), 0, 255)`` in
(C, H, W) C order (NaN/inf pixels count as 0; integer images are hashed as stored). MedMNIST
images come from uint8 files, so their values are exact multiples of 1/255 and the quantisation
is lossless: two images get the same hash exactly when their pixels are identical. For
arbitrary float images, images that differ by less than half a grey level also match (the
intended "same picture" notion). The hash covers pixel bytes only; the shape is in its own
columns.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from medsec.data.types import ImageDataset
from medsec.errors import DataError

_CHUNK = 4096  # images per block when computing the table


def shape_str(shape: tuple[int, ...] | list[int]) -> str:
    """``(1, 28, 28)`` -> ``"1x28x28"``."""
    return "x".join(str(int(s)) for s in shape)


def _pixel_stats(flat: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per-row (min, max, mean, n_nonfinite) over the finite pixels of ``flat`` (n, P)."""
    values = flat.astype(np.float64, copy=False)
    n, p = values.shape
    if p == 0:
        nan = np.full(n, np.nan)
        return nan, nan, nan, np.zeros(n, np.int64)
    finite = np.isfinite(values)
    n_nonfinite = p - finite.sum(axis=1)
    if not n_nonfinite.any():
        return values.min(axis=1), values.max(axis=1), values.mean(axis=1), n_nonfinite
    n_finite = finite.sum(axis=1)
    lo = np.where(finite, values, np.inf).min(axis=1)
    hi = np.where(finite, values, -np.inf).max(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(finite, values, 0.0).sum(axis=1) / n_finite
    for column in (lo, hi, mean):
        column[n_finite == 0] = np.nan
    return lo, hi, mean, n_nonfinite.astype(np.int64)


def multi_hot_strata(labels: np.ndarray) -> np.ndarray:
    """Multi-hot labels (N, L) as one value per image for the label checks: the index of the
    first finding present, ``L`` ("no finding") when none, -1 when a value is not 0/1 (out of
    range: fails "labels in range"), NaN when a value is NaN (fails "labels present")."""
    values = labels.astype(np.float64)
    out = np.where(values.any(axis=1), values.argmax(axis=1), values.shape[1]).astype(np.float64)
    out[~np.isin(values, (0.0, 1.0)).all(axis=1)] = -1
    out[np.isnan(values).any(axis=1)] = np.nan
    return out if np.isnan(out).any() else out.astype(np.int64)


def _labels(split: str, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The labels as a flat (N,) array (int64 when integral); DataError on a length mismatch."""
    if images.ndim < 1:
        raise DataError(f"split {split!r}: images must be an array (N, C, H, W); got a scalar")
    n = int(images.shape[0])
    if labels.ndim == 2 and labels.shape[0] == n and labels.shape[1] > 1:
        return multi_hot_strata(labels)
    if labels.size != n:
        raise DataError(f"split {split!r}: {n} image(s) but {labels.size} label(s) (labels shape "
                        f"{labels.shape}); expected one label per image")
    labels = labels.reshape(-1)
    if np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool:
        labels = labels.astype(np.int64)
    return labels


def _blockwise(array: np.ndarray, stats: Callable[[np.ndarray], tuple[np.ndarray, ...]]
               ) -> list[np.ndarray]:
    """``stats`` of ``array`` (N, ...) flattened to (n, P) blocks of at most ``_CHUNK`` rows
    (bounds the float64 temporaries), concatenated per output column."""
    n, size = len(array), int(np.prod(array.shape[1:]))
    blocks = [stats(array[start : start + _CHUNK].reshape(min(_CHUNK, n - start), size))
              for start in range(0, n, _CHUNK)] or [stats(array.reshape(0, size))]
    return [np.concatenate(column) for column in zip(*blocks, strict=True)]


def _image_block(flat: np.ndarray) -> tuple[np.ndarray, ...]:
    """(min, max, mean, n_nonfinite, content_hash) per row of ``flat`` (n, P) images; the
    hashed bytes are uint8 grey levels for float images, the raw values otherwise."""
    hashed = np.ascontiguousarray(flat)
    if np.issubdtype(flat.dtype, np.floating):
        scaled = np.nan_to_num(flat.astype(np.float64) * 255.0, nan=0.0, posinf=0.0, neginf=0.0)
        hashed = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    hashes = [hashlib.sha1(row.tobytes()).hexdigest() for row in hashed]
    return (*_pixel_stats(flat), np.asarray(hashes, dtype=object))


def _split_rows(split: str, data: ImageDataset, with_masks: bool) -> dict[str, Any]:
    images = np.asarray(data.images)
    labels = _labels(split, images, np.asarray(data.labels))
    n = int(images.shape[0])
    shape = tuple(int(s) for s in images.shape[1:])
    # (N, H, W) images: channel axis missing; other ranks: no channels/height/width
    channels, height, width = shape if len(shape) == 3 else (-1, *shape) if len(shape) == 2 else (
        -1, -1, -1)
    rows: dict[str, Any] = {
        "split": np.full(n, split, dtype=object), "index": np.arange(n, dtype=np.int64),
        "label": labels, "channels": np.full(n, channels, np.int64),
        "height": np.full(n, height, np.int64), "width": np.full(n, width, np.int64),
        "shape": np.full(n, shape_str(shape), dtype=object),
        "dtype": np.full(n, str(images.dtype), dtype=object),
        **dict(zip(("min", "max", "mean", "n_nonfinite", "content_hash"),
                   _blockwise(images, _image_block), strict=True))}
    if with_masks:
        rows.update(_mask_rows(split, data.masks, images.shape, n))
    return rows


def _mask_block(flat: np.ndarray, integral: bool) -> tuple[np.ndarray, ...]:
    """(foreground fraction, non-integer count, min, max) per row of ``flat`` (n, P) masks."""
    lo, hi, _, _ = _pixel_stats(flat)
    if flat.shape[1] == 0:
        fraction = np.full(len(flat), np.nan)
    else:
        with np.errstate(invalid="ignore"):
            fraction = (flat > 0).mean(axis=1)
    if integral:
        return fraction, np.zeros(len(flat), np.int64), lo, hi
    values = flat.astype(np.float64, copy=False)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(values) & (values == np.rint(values))
    return fraction, (flat.shape[1] - ok.sum(axis=1)).astype(np.int64), lo, hi


def _mask_rows(split: str, masks: np.ndarray | None, image_shape: tuple[int, ...], n: int
               ) -> dict[str, np.ndarray]:
    """The mask columns of one split (values that pass every mask check when there are none)."""
    if masks is None:
        return {"has_mask": np.zeros(n, bool), "mask_shape": np.full(n, "", dtype=object),
                "mask_shape_ok": np.ones(n, bool), "mask_foreground_fraction": np.full(n, np.nan),
                "mask_nonint": np.zeros(n, np.int64), "mask_min": np.full(n, np.nan),
                "mask_max": np.full(n, np.nan)}
    masks = np.asarray(masks)
    count = int(masks.shape[0]) if masks.ndim else 0
    if masks.ndim == 0 or count != n:
        raise DataError(f"split {split!r}: {n} image(s) but {count} mask(s) (masks shape "
                        f"{masks.shape}); expected one mask per image")
    numeric = np.issubdtype(masks.dtype, np.number) or masks.dtype == bool
    if not numeric or np.iscomplexobj(masks):
        raise DataError(f"split {split!r}: masks must be a real numeric array, got dtype "
                        f"{masks.dtype}")
    # spatial shape: (N, C, *S) images -> S; (N, H, W) images (no channel axis) -> (H, W)
    spatial = tuple(image_shape[1:]) if len(image_shape) <= 3 else tuple(image_shape[2:])
    mask_shape = tuple(int(s) for s in masks.shape[1:])
    integral = np.issubdtype(masks.dtype, np.integer) or masks.dtype == bool
    fraction, nonint, lo, hi = _blockwise(masks, lambda flat: _mask_block(flat, integral))
    return {"has_mask": np.ones(n, bool),
            "mask_shape": np.full(n, shape_str(mask_shape), dtype=object),
            "mask_shape_ok": np.full(n, mask_shape == spatial, dtype=bool),
            "mask_foreground_fraction": fraction, "mask_nonint": nonint,
            "mask_min": lo, "mask_max": hi}


def image_table(splits: dict[str, ImageDataset]) -> pd.DataFrame:
    """One row per image of every split (in split order, then index order).

    Columns: ``split``, ``index`` (position in the split), ``label``, ``channels``, ``height``,
    ``width`` (-1 where the images are not (N, C, H, W)), ``shape`` (e.g. ``"1x28x28"``),
    ``dtype``, ``min``/``max``/``mean`` (over the finite pixels; NaN if there are none),
    ``n_nonfinite`` (NaN/inf pixels), ``content_hash`` (SHA-1 of the uint8-quantised image; see
    the module docstring), ``n_splits_with_content`` (splits holding an image of that hash: 1
    unless it leaks).

    When any split has masks (2D (N, H, W) for (N, C, H, W) images, 3D (N, D, H, W) for
    (N, C, D, H, W) volumes): ``has_mask``, ``mask_shape`` (e.g. ``"28x28"``), ``mask_shape_ok``
    (the mask's shape equals the image's spatial shape: ``images.shape[2:]``, or
    ``images.shape[1:]`` for (N, H, W) images), ``mask_foreground_fraction`` (mask > 0),
    ``mask_nonint`` (values that are not finite integers) and ``mask_min``/``mask_max`` (over
    the finite values; NaN if there are none). Rows of a split without masks get values that
    pass the mask checks (``mask_shape_ok`` True, ``mask_nonint`` 0, NaN elsewhere).

    Raises :class:`DataError` when a split's images, labels and masks disagree in length.
    """
    with_masks = any(data.masks is not None for data in splits.values())
    parts = [_split_rows(name, data, with_masks) for name, data in splits.items()]
    if not parts:
        parts = [_split_rows("", ImageDataset(np.zeros((0, 0)), np.zeros(0)), with_masks)]
    df = pd.DataFrame({key: np.concatenate([part[key] for part in parts]) for key in parts[0]})
    df["n_splits_with_content"] = (
        df.groupby("content_hash")["split"].transform("nunique").astype(np.int64))
    return df


def label_key(value: Any) -> Any:
    """A label as a plain int where it is integral, else its string (e.g. ``"nan"``)."""
    value = value.item() if isinstance(value, np.generic) else value
    if isinstance(value, float) and np.isfinite(value) and value.is_integer():
        return int(value)
    return value if isinstance(value, int) else str(value)


def class_table(df: pd.DataFrame, split_names: list[str], num_classes: int) -> pd.DataFrame:
    """One row per (split, label): every class ``0..num_classes-1`` (0 images included), then
    the out-of-range labels seen. Columns ``split``, ``label``, ``count``, ``n_images`` (of the
    split) and ``fraction`` (count / n_images in [0, 1]; NaN - not checked - for out-of-range
    labels and empty splits)."""
    rows: list[dict[str, Any]] = []
    for split in split_names:
        labels = df.loc[df["split"] == split, "label"]
        observed = {label_key(k): int(v) for k, v in labels.value_counts(dropna=False).items()}
        total = len(labels)  # 0 for an empty split
        for label, count in ({c: 0 for c in range(num_classes)} | observed).items():
            declared = isinstance(label, int) and 0 <= label < num_classes
            rows.append({"split": split, "label": label, "count": count, "n_images": total,
                         "fraction": count / total if total and declared else np.nan})
    table = pd.DataFrame(rows, columns=["split", "label", "count", "n_images", "fraction"])
    return table.astype({"count": np.int64, "n_images": np.int64, "fraction": np.float64})


def mask_stats(df: pd.DataFrame, split_names: list[str]) -> dict[str, dict[str, Any]] | None:
    """Per split: masks, mean foreground fraction, fraction of images with foreground, value
    range (None for a statistic without data). None when the table has no mask columns."""
    if "has_mask" not in df.columns:
        return None
    stats: dict[str, dict[str, Any]] = {}
    for split in split_names:
        rows = df[(df["split"] == split) & df["has_mask"]]
        fractions = rows["mask_foreground_fraction"].dropna()
        finite = bool(len(fractions))
        stats[split] = {
            "n_masks": len(rows),
            "mean_foreground_fraction": float(fractions.mean()) if finite else None,
            "fraction_with_foreground": float((fractions > 0).mean()) if finite else None,
            "min": float(rows["mask_min"].min()) if rows["mask_min"].notna().any() else None,
            "max": float(rows["mask_max"].max()) if rows["mask_max"].notna().any() else None}
    return stats
