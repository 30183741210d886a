"""Data validation: a per-image table checked by a Great Expectations 1.x suite.

:func:`image_table` turns the splits into one row per image (label, shape, dtype, pixel
statistics, a content hash, mask statistics). :func:`validate_dataset` runs one ephemeral GX
context with one expectation suite over that table:

* HARD expectations (a failure makes ``report.success`` False and :func:`raise_if_failed` stop
  the pipeline): labels in ``{0, ..., num_classes-1}``, no missing labels, pixel values in
  [0, 1], no NaN/inf pixels, every image of the expected shape (C, H, W), dtype float32, and no
  empty split. When any split has segmentation masks (2D (N, H, W) for (N, C, H, W) images, 3D
  (N, D, H, W) for (N, C, D, H, W) volumes), also: each mask's shape equals its image's spatial
  shape, mask values are finite integers, >= 0 and (given ``num_mask_classes``) below
  ``num_mask_classes``.
* SOFT expectations (warnings only): no duplicate images within a split, no image shared
  between splits (leakage), every class at least ``min_class_fraction`` of each split
  (computed with pandas on the per-split class counts: a class absent from a split has no
  row in the image table for GX to see; the result is recorded next to the GX results), and
  (with masks) a mask foreground fraction of at most ``max_foreground_fraction`` per image.
  Per-split mask statistics go to ``report.mask_stats``.

Content hash: SHA-1 of the image quantised to uint8, ``clip(rint(x * 255), 0, 255)`` in
(C, H, W) C order (NaN/inf pixels count as 0; integer images are hashed as stored). MedMNIST
images come from uint8 files, so their values are exact multiples of 1/255 and the quantisation
is lossless: two images get the same hash exactly when their pixels are identical. For
arbitrary float images, images that differ by less than half a grey level also match (the
intended "same picture" notion). The hash covers pixel bytes only; the shape is in its own
columns.

Great Expectations is imported inside :func:`validate_dataset` (the import takes seconds).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medsec.data.types import SPLITS, ImageDataset, LoadedDataset
from medsec.errors import DataError, ValidationFailed
from medsec.io import write_json, write_text

HARD = "hard"
SOFT = "soft"
MAX_LISTED_GROUPS = 50  # duplicate groups listed in the markdown report (the rest are counted)
_CHUNK = 4096  # images per block when computing the table (bounds the float64 temporaries)


# --------------------------------------------------------------------------------------------
# Per-image table
# --------------------------------------------------------------------------------------------


def _shape_str(shape: tuple[int, ...] | list[int]) -> str:
    return "x".join(str(int(s)) for s in shape)


def _quantise(block: np.ndarray) -> np.ndarray:
    """The bytes that are hashed: uint8 grey levels for float images, raw values otherwise."""
    if np.issubdtype(block.dtype, np.floating):
        scaled = np.nan_to_num(block.astype(np.float64) * 255.0, nan=0.0, posinf=0.0, neginf=0.0)
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(block)


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
    none = n_finite == 0
    lo[none] = np.nan
    hi[none] = np.nan
    mean[none] = np.nan
    return lo, hi, mean, n_nonfinite.astype(np.int64)


def _split_rows(
    split: str, data: ImageDataset, with_masks: bool, expected: str | None
) -> dict[str, Any]:
    images = np.asarray(data.images)
    labels = np.asarray(data.labels)
    if images.ndim < 1:
        raise DataError(f"split {split!r}: images must be an array (N, C, H, W); got a scalar")
    n = int(images.shape[0])
    if labels.size != n:
        raise DataError(
            f"split {split!r}: {n} image(s) but {labels.size} label(s) (labels shape "
            f"{labels.shape}); expected one label per image"
        )
    labels = labels.reshape(-1)
    if np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool:
        labels = labels.astype(np.int64)
    shape = tuple(int(s) for s in images.shape[1:])
    if len(shape) == 3:
        channels, height, width = shape
    elif len(shape) == 2:  # (N, H, W): channel axis missing
        channels, (height, width) = -1, shape
    else:
        channels = height = width = -1
    stats = [np.empty(0)] * 3 + [np.empty(0, np.int64)]
    hashes: list[str] = []
    blocks = []
    for start in range(0, n, _CHUNK):
        block = images[start : start + _CHUNK]
        flat = block.reshape(len(block), -1)
        blocks.append(_pixel_stats(flat))
        quantised = _quantise(flat)
        hashes.extend(hashlib.sha1(row.tobytes()).hexdigest() for row in quantised)
    if blocks:
        stats = [np.concatenate(parts) for parts in zip(*blocks, strict=True)]
    rows: dict[str, Any] = {
        "split": np.full(n, split, dtype=object),
        "index": np.arange(n, dtype=np.int64),
        "label": labels,
        "channels": np.full(n, channels, np.int64),
        "height": np.full(n, height, np.int64),
        "width": np.full(n, width, np.int64),
        "shape": np.full(n, _shape_str(shape), dtype=object),
        "dtype": np.full(n, str(images.dtype), dtype=object),
        "min": stats[0],
        "max": stats[1],
        "mean": stats[2],
        "n_nonfinite": stats[3],
        "content_hash": np.asarray(hashes, dtype=object),
    }
    if expected is not None:
        rows["shape_ok"] = np.full(n, _shape_str(shape) == expected, dtype=bool)
    if with_masks:
        rows.update(_mask_rows(split, data.masks, images.shape, n))
    return rows


def _mask_rows(
    split: str, masks: np.ndarray | None, image_shape: tuple[int, ...], n: int
) -> dict[str, np.ndarray]:
    """The mask columns of one split (values that pass every mask check when there are none)."""
    if masks is None:
        return {
            "has_mask": np.zeros(n, bool),
            "mask_shape": np.full(n, "", dtype=object),
            "mask_shape_ok": np.ones(n, bool),
            "mask_foreground_fraction": np.full(n, np.nan),
            "mask_nonint": np.zeros(n, np.int64),
            "mask_min": np.full(n, np.nan),
            "mask_max": np.full(n, np.nan),
        }
    masks = np.asarray(masks)
    count = int(masks.shape[0]) if masks.ndim else 0
    if masks.ndim == 0 or count != n:
        raise DataError(
            f"split {split!r}: {n} image(s) but {count} mask(s) (masks shape {masks.shape}); "
            f"expected one mask per image"
        )
    if not (np.issubdtype(masks.dtype, np.number) or masks.dtype == bool) or np.iscomplexobj(
        masks
    ):
        raise DataError(f"split {split!r}: masks must be a real numeric array, got dtype "
                        f"{masks.dtype}")
    # spatial shape: (N, C, *S) images -> S; (N, H, W) images (no channel axis) -> (H, W)
    spatial = tuple(image_shape[1:]) if len(image_shape) <= 3 else tuple(image_shape[2:])
    mask_shape = tuple(int(s) for s in masks.shape[1:])
    integral = np.issubdtype(masks.dtype, np.integer) or masks.dtype == bool
    parts: list[tuple[np.ndarray, ...]] = []
    for start in range(0, n, _CHUNK):
        flat = masks[start : start + _CHUNK].reshape(min(_CHUNK, n - start), -1)
        lo, hi, _, _ = _pixel_stats(flat)
        if flat.shape[1] == 0:
            fraction = np.full(len(flat), np.nan)
        else:
            with np.errstate(invalid="ignore"):
                fraction = (flat > 0).mean(axis=1)
        if integral:
            nonint = np.zeros(len(flat), np.int64)
        else:
            values = flat.astype(np.float64, copy=False)
            with np.errstate(invalid="ignore"):
                ok = np.isfinite(values) & (values == np.rint(values))
            nonint = (flat.shape[1] - ok.sum(axis=1)).astype(np.int64)
        parts.append((fraction, nonint, lo, hi))
    fraction, nonint, lo, hi = (
        [np.concatenate(column) for column in zip(*parts, strict=True)] if parts
        else [np.empty(0), np.empty(0, np.int64), np.empty(0), np.empty(0)]
    )
    return {
        "has_mask": np.ones(n, bool),
        "mask_shape": np.full(n, _shape_str(mask_shape), dtype=object),
        "mask_shape_ok": np.full(n, mask_shape == spatial, dtype=bool),
        "mask_foreground_fraction": fraction,
        "mask_nonint": nonint,
        "mask_min": lo,
        "mask_max": hi,
    }


def image_table(
    splits: dict[str, ImageDataset], expected_shape: tuple[int, ...] | None = None
) -> pd.DataFrame:
    """One row per image of every split (in split order, then index order).

    Columns: ``split``, ``index`` (position in the split), ``label``, ``channels``, ``height``,
    ``width`` (-1 where the images are not (N, C, H, W)), ``shape`` (e.g. ``"1x28x28"``),
    ``dtype``, ``min``/``max``/``mean`` (over the finite pixels; NaN if there are none),
    ``n_nonfinite`` (NaN/inf pixels), ``content_hash`` (SHA-1 of the uint8-quantised image; see
    the module docstring); ``shape_ok`` when ``expected_shape`` (C, H, W) is given.

    When any split has masks (2D (N, H, W) for (N, C, H, W) images, 3D (N, D, H, W) for
    (N, C, D, H, W) volumes): ``has_mask``, ``mask_shape`` (e.g. ``"28x28"``), ``mask_shape_ok``
    (the mask's shape equals the image's spatial shape: ``images.shape[2:]``, or
    ``images.shape[1:]`` for (N, H, W) images), ``mask_foreground_fraction`` (mask > 0),
    ``mask_nonint`` (values that are not finite integers) and ``mask_min``/``mask_max`` (over
    the finite values; NaN if there are none). Rows of a split without masks get values that
    pass the mask checks (``mask_shape_ok`` True, ``mask_nonint`` 0, NaN elsewhere).

    Raises :class:`DataError` when a split's images, labels and masks disagree in length.
    """
    expected = None if expected_shape is None else _shape_str(expected_shape)
    with_masks = any(data.masks is not None for data in splits.values())
    parts = [_split_rows(name, data, with_masks, expected) for name, data in splits.items()]
    if not parts:
        parts = [_split_rows("", ImageDataset(np.zeros((0, 0)), np.zeros(0)), with_masks,
                             expected)]
    columns = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
    return pd.DataFrame(columns)


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """Plain JSON types (numpy scalars/arrays, tuples, non-str keys and NaN handled)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


@dataclass
class ValidationReport:
    """What :func:`validate_dataset` found. ``success`` is False iff a HARD expectation failed."""

    success: bool
    hard_failures: list[str]
    warnings: list[str]
    duplicates_within: list[dict[str, Any]]  # {split, indices, labels, content_hash}
    duplicates_across: list[dict[str, Any]]  # {content_hash, splits, members, labels}
    class_counts: dict[str, dict[int, int]]  # split -> label -> count (all classes listed)
    n_images: dict[str, int]
    expectations: list[dict[str, Any]]  # {name, type, severity, success, observed, engine}
    num_classes: int
    expected_shape: list[int]
    min_class_fraction: float
    dataset_name: str | None = None
    dataset_version: str | None = None
    verification: str | None = None
    class_names: list[str] = field(default_factory=list)
    gx_version: str = ""
    # split -> {n_masks, mean_foreground_fraction, fraction_with_foreground, min, max}; None
    # when no split has masks
    mask_stats: dict[str, dict[str, Any]] | None = None

    # ----------------------------------------------------------------------------------------
    def class_fractions(self) -> dict[str, dict[int, float]]:
        return {
            split: {c: (k / total if total else 0.0) for c, k in counts.items()}
            for split, counts in self.class_counts.items()
            for total in [sum(counts.values())]
        }

    def _class_label(self, c: Any) -> str:
        if isinstance(c, int) and 0 <= c < len(self.class_names):
            return f"{c} ({self.class_names[c]})"
        return str(c)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (label keys become strings, NaN becomes null)."""
        data = asdict(self)
        data["class_fractions"] = self.class_fractions()
        data["verdict"] = "PASSED" if self.success else "FAILED"
        return _jsonable(data)

    def summary_metrics(self) -> dict[str, float]:
        """Flat numeric metrics (for MLflow / DVC): sizes, duplicate counts, class fractions."""
        metrics: dict[str, float] = {"success": 1.0 if self.success else 0.0}
        for split, n in self.n_images.items():
            metrics[f"n_{split}"] = n
        metrics["n_images"] = sum(self.n_images.values())
        within_sizes = [len(g["indices"]) for g in self.duplicates_within]
        metrics["n_duplicate_groups_within"] = len(within_sizes)
        metrics["n_duplicate_images_within"] = sum(within_sizes)
        metrics["n_redundant_images_within"] = sum(within_sizes) - len(within_sizes)
        for split in self.n_images:
            groups = [g for g in self.duplicates_within if g["split"] == split]
            metrics[f"n_duplicate_groups_within_{split}"] = len(groups)
        metrics["n_duplicate_groups_across"] = len(self.duplicates_across)
        metrics["n_duplicate_images_across"] = sum(len(g["members"]) for g in
                                                   self.duplicates_across)
        metrics["n_hard_failures"] = len(self.hard_failures)
        metrics["n_warnings"] = len(self.warnings)
        for split, fractions in self.class_fractions().items():
            for c, frac in fractions.items():
                metrics[f"class_fraction_{split}_{c}"] = round(float(frac), 6)
        for split, stats in (self.mask_stats or {}).items():
            for key, name in (("mean_foreground_fraction", "mask_foreground_fraction"),
                              ("fraction_with_foreground", "mask_images_with_foreground")):
                value = stats.get(key)
                if value is not None and np.isfinite(value):
                    metrics[f"{name}_{split}"] = round(float(value), 6)
        return metrics

    def to_markdown(self, max_groups: int = MAX_LISTED_GROUPS) -> str:
        """A readable summary: verdict, hard failures, warnings, class counts, duplicates."""
        name = self.dataset_name or "dataset"
        verdict = "PASSED" if self.success else "FAILED"
        lines = [f"# Data validation: {name}", ""]
        lines.append(
            f"**Verdict: {verdict}** ({len(self.hard_failures)} hard failure(s), "
            f"{len(self.warnings)} warning(s))"
        )
        lines.append("")
        sizes = ", ".join(f"{s} {n}" for s, n in self.n_images.items())
        lines.append(f"- images: {sizes} (total {sum(self.n_images.values())})")
        lines.append(f"- expected image shape: {_shape_str(self.expected_shape)}, "
                     f"{self.num_classes} class(es)")
        if self.dataset_version:
            lines.append(f"- data version (md5): `{self.dataset_version}`")
        if self.verification:
            lines.append(f"- verification: {self.verification}")
        if self.gx_version:
            lines.append(f"- checked with Great Expectations {self.gx_version}")
        lines += ["", "## Hard failures", ""]
        lines += [f"- {msg}" for msg in self.hard_failures] or ["None."]
        lines += ["", "## Warnings", ""]
        lines += [f"- {msg}" for msg in self.warnings] or ["None."]

        lines += ["", "## Class counts", ""]
        seen = {c for counts in self.class_counts.values() for c in counts}
        classes = sorted(c for c in seen if isinstance(c, int))
        classes += sorted((c for c in seen if not isinstance(c, int)), key=str)
        header = ["split", "images", *[self._class_label(c) for c in classes]]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        fractions = self.class_fractions()
        for split, counts in self.class_counts.items():
            cells = [split, str(self.n_images.get(split, 0))]
            for c in classes:
                k = counts.get(c, 0)
                cells.append(f"{k} ({fractions[split].get(c, 0.0):.1%})")
            lines.append("| " + " | ".join(cells) + " |")

        if self.mask_stats is not None:
            lines += ["", "## Masks", "",
                      "| split | masks | mean foreground fraction | images with foreground | "
                      "value range |", "|---|---|---|---|---|"]
            for split, stats in self.mask_stats.items():
                lo, hi = stats.get("min"), stats.get("max")
                lines.append(
                    f"| {split} | {stats.get('n_masks', 0)} | "
                    f"{_fraction_text(stats.get('mean_foreground_fraction'))} | "
                    f"{_fraction_text(stats.get('fraction_with_foreground'))} | "
                    + ("-" if lo is None or hi is None or not np.isfinite([lo, hi]).all()
                       else f"{_value_text(lo)} to {_value_text(hi)}")
                    + " |"
                )

        lines += ["", f"## Duplicate images within splits ({len(self.duplicates_within)} "
                      f"group(s))", ""]
        if not self.duplicates_within:
            lines.append("None.")
        for group in self.duplicates_within[:max_groups]:
            members = ", ".join(f"{group['split']}[{i}]" for i in group["indices"])
            lines.append(f"- {members}{_labels_note(group)} (sha1 `{group['content_hash'][:12]}`)")
        if len(self.duplicates_within) > max_groups:
            lines.append(f"- ... and {len(self.duplicates_within) - max_groups} more group(s)")

        lines += ["", f"## Images shared between splits ({len(self.duplicates_across)} "
                      f"group(s))", ""]
        if not self.duplicates_across:
            lines.append("None.")
        for group in self.duplicates_across[:max_groups]:
            lines.append(f"- {', '.join(group['members'])}{_labels_note(group)} "
                         f"(sha1 `{group['content_hash'][:12]}`)")
        if len(self.duplicates_across) > max_groups:
            lines.append(f"- ... and {len(self.duplicates_across) - max_groups} more group(s)")

        lines += ["", "## Expectations", "", "| expectation | severity | result | observed |",
                  "|---|---|---|---|"]
        for exp in self.expectations:
            result = "pass" if exp["success"] else ("FAIL" if exp["severity"] == HARD else "warn")
            lines.append(f"| {exp['name']} | {exp['severity']} | {result} | "
                         f"{_observed_text(exp.get('observed'))} |")
        return "\n".join(lines) + "\n"


def _fraction_text(value: Any) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{float(value):.1%}"


def _mask_stats(df: pd.DataFrame, split_names: list[str]) -> dict[str, dict[str, Any]]:
    """Per split: masks, mean foreground fraction, fraction of images with foreground, range."""
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
            "max": float(rows["mask_max"].max()) if rows["mask_max"].notna().any() else None,
        }
    return stats


def _conflicting(group: dict[str, Any]) -> bool:
    return len({str(label) for label in group.get("labels", [])}) > 1


def _labels_note(group: dict[str, Any]) -> str:
    labels = group.get("labels", [])
    if _conflicting(group):
        return f" - CONFLICTING labels {', '.join(map(str, labels))}"
    return f" - label {labels[0]}" if labels else ""


def _observed_text(observed: Any) -> str:
    if not isinstance(observed, dict):
        return "" if observed is None else str(observed)
    if "unexpected_count" in observed:
        return f"{observed['unexpected_count']} of {observed.get('element_count', '?')} unexpected"
    parts = []
    for key, value in observed.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {v}" for k, v in value.items())
        parts.append(f"{key}: {value}")
    return "; ".join(parts).replace("|", "/")


def write_report(report: ValidationReport, out_dir: str | Path) -> dict[str, Path]:
    """Write ``report.json`` and ``report.md`` into ``out_dir`` (atomically); return the paths."""
    out = Path(out_dir)
    return {
        "json": write_json(out / "report.json", report.to_dict()),
        "markdown": write_text(out / "report.md", report.to_markdown()),
    }


def raise_if_failed(report: ValidationReport) -> None:
    """Raise :class:`ValidationFailed` listing the hard failures unless ``report.success``."""
    if report.success:
        return
    name = report.dataset_name or "dataset"
    failures = report.hard_failures or ["(no failure message recorded)"]
    raise ValidationFailed(
        f"data validation of {name} failed: {len(failures)} hard failure(s):\n  - "
        + "\n  - ".join(failures)
    )


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _label_set_text(num_classes: int) -> str:
    if num_classes <= 5:
        return "{" + ",".join(str(c) for c in range(num_classes)) + "}"
    return f"{{0,...,{num_classes - 1}}}"


def _value_text(value: Any) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _per_split_messages(
    what: str, detail: str, result: dict[str, Any], column: str, split_order: list[str],
    df: pd.DataFrame | None = None,
) -> list[str]:
    """One message per split from a GX map-expectation result with unexpected indices.

    ``detail`` is formatted with the first bad image's ``column`` value (``{}``) and, given
    ``df``, that image's other columns by name (e.g. ``{mask_shape}``).
    """
    entries = result.get("unexpected_index_list") or result.get("partial_unexpected_index_list")
    if not entries:
        count = result.get("unexpected_count", "?")
        return [f"{what}: {count} image(s)"]
    by_split: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        by_split.setdefault(str(entry["split"]), []).append(entry)
    ordered = [s for s in split_order if s in by_split] + [
        s for s in by_split if s not in split_order
    ]
    messages = []
    for split in ordered:
        rows = by_split[split]
        first = rows[0]
        value = _value_text(first.get(column))
        where = f"{split}[{int(first['index'])}]"
        fields: dict[str, str] = {}
        if df is not None:
            match = df[(df["split"] == split) & (df["index"] == int(first["index"]))]
            if len(match):
                fields = {str(k): _value_text(v) for k, v in match.iloc[0].items()}
        text = detail.format(value, **fields)
        messages.append(f"{what}: {len(rows)} image(s) in {split} (first: {where}{text})")
    return messages


def _duplicate_groups(df: pd.DataFrame) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    within: list[dict[str, Any]] = []
    dup = df[df.duplicated(["split", "content_hash"], keep=False)]
    for (split, digest), group in dup.groupby(["split", "content_hash"], sort=False):
        within.append({"split": str(split), "indices": [int(i) for i in group["index"]],
                       "labels": [_label_key(v) for v in group["label"]],
                       "content_hash": str(digest)})
    across: list[dict[str, Any]] = []
    shared = df[df["n_splits_with_content"] > 1]
    for digest, group in shared.groupby("content_hash", sort=False):
        splits = list(dict.fromkeys(str(s) for s in group["split"]))
        members = [f"{s}[{int(i)}]" for s, i in zip(group["split"], group["index"], strict=True)]
        across.append({"content_hash": str(digest), "splits": splits, "members": members,
                       "labels": [_label_key(v) for v in group["label"]]})
    return within, across


def _label_key(value: Any) -> Any:
    value = value.item() if isinstance(value, np.generic) else value
    if isinstance(value, float) and np.isfinite(value) and value.is_integer():
        return int(value)
    return value if isinstance(value, int) else str(value)


def _class_counts(
    df: pd.DataFrame, split_names: list[str], num_classes: int
) -> dict[str, dict[Any, int]]:
    counts: dict[str, dict[Any, int]] = {}
    for split in split_names:
        labels = df.loc[df["split"] == split, "label"]
        observed = {_label_key(k): int(v) for k, v in labels.value_counts(dropna=False).items()}
        row = {c: observed.pop(c, 0) for c in range(num_classes)}
        row.update(observed)  # out-of-range labels, listed after the real classes
        counts[split] = row
    return counts


def _gx_observed(result: dict[str, Any]) -> dict[str, Any]:
    keep = ("element_count", "unexpected_count", "unexpected_percent", "missing_count",
            "observed_value", "partial_missing_list", "partial_unexpected_counts")
    observed = {k: result[k] for k in keep if k in result and result[k] is not None}
    if "partial_unexpected_counts" in observed:
        observed["partial_unexpected_counts"] = observed["partial_unexpected_counts"][:10]
    return _jsonable(observed)


def validate_dataset(
    data: LoadedDataset | dict[str, ImageDataset],
    num_classes: int,
    expected_shape: tuple[int, ...] | None,
    min_class_fraction: float = 0.1,
    num_mask_classes: int | None = None,
    max_foreground_fraction: float = 0.5,
) -> ValidationReport:
    """Check every split with one Great Expectations suite; see the module docstring.

    ``expected_shape`` is the per-image shape (C, H, W) (or (C, D, H, W) for volumes); None
    means the shape of the first non-empty split. The mask checks run only when some split has
    masks: ``num_mask_classes`` (None: not checked) bounds the mask values to
    ``{0, ..., num_mask_classes-1}``; ``max_foreground_fraction`` is the SOFT limit on the
    fraction of mask pixels > 0 per image. Returns a :class:`ValidationReport` (never raises
    for bad data; call :func:`raise_if_failed` to stop on hard failures). Raises
    :class:`DataError` when images, labels and masks of a split disagree in length,
    ``ValueError`` for invalid arguments.
    """
    if isinstance(data, LoadedDataset):
        splits = data.splits
        meta = {"dataset_name": data.name, "dataset_version": data.version,
                "verification": data.verification, "class_names": list(data.class_names)}
    else:
        splits, meta = dict(data), {}
    if not splits:
        raise ValueError("validate_dataset: no splits given")
    if int(num_classes) < 1:
        raise ValueError(f"validate_dataset: num_classes must be >= 1, got {num_classes}")
    if not 0.0 <= float(min_class_fraction) <= 1.0:
        raise ValueError(f"min_class_fraction must be in [0, 1], got {min_class_fraction}")
    if num_mask_classes is not None and int(num_mask_classes) < 1:
        raise ValueError(f"num_mask_classes must be >= 1 or None, got {num_mask_classes}")
    if not 0.0 <= float(max_foreground_fraction) <= 1.0:
        raise ValueError(
            f"max_foreground_fraction must be in [0, 1], got {max_foreground_fraction}"
        )
    num_classes = int(num_classes)
    max_foreground_fraction = float(max_foreground_fraction)
    if expected_shape is None:
        first = next((d for d in splits.values() if len(d.labels)), next(iter(splits.values())))
        expected_shape = tuple(int(s) for s in np.asarray(first.images).shape[1:])
    expected_shape = tuple(int(s) for s in expected_shape)
    expected = _shape_str(expected_shape)
    split_names = list(splits)
    split_order = [s for s in SPLITS if s in splits] + [s for s in splits if s not in SPLITS]
    split_names = split_order if set(split_order) == set(split_names) else split_names

    df = image_table({s: splits[s] for s in split_names}, expected_shape)
    df["n_splits_with_content"] = (
        df.groupby("content_hash")["split"].transform("nunique").astype(np.int64)
    )

    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

    label_set = _label_set_text(num_classes)
    # (name, severity, expectation, message prefix, detail format for the first bad image)
    checks: list[tuple[str, str, Any, str, str, str | None]] = [
        ("labels in range", HARD,
         gxe.ExpectColumnValuesToBeInSet(column="label", value_set=list(range(num_classes))),
         f"labels outside {label_set}", "={}", "label"),
        ("labels present", HARD, gxe.ExpectColumnValuesToNotBeNull(column="label"),
         "missing (NaN) labels", "={}", "label"),
        ("pixel min >= 0", HARD, gxe.ExpectColumnValuesToBeBetween(column="min", min_value=0.0),
         "pixel values below 0", " has min {}", "min"),
        ("pixel max <= 1", HARD, gxe.ExpectColumnValuesToBeBetween(column="max", max_value=1.0),
         "pixel values above 1", " has max {}", "max"),
        ("no NaN/inf pixels", HARD,
         gxe.ExpectColumnValuesToBeBetween(column="n_nonfinite", min_value=0, max_value=0),
         "NaN/inf pixels", " has {} NaN/inf pixel(s)", "n_nonfinite"),
        (f"image shape {expected}", HARD,
         gxe.ExpectColumnValuesToBeInSet(column="shape", value_set=[expected]),
         f"image shape not {expected} (C x H x W)", " has shape {}", "shape"),
        ("dtype float32", HARD,
         gxe.ExpectColumnValuesToBeInSet(column="dtype", value_set=["float32"]),
         "image dtype not float32", " has dtype {}", "dtype"),
        ("no empty split", HARD,
         gxe.ExpectColumnDistinctValuesToContainSet(column="split", value_set=split_names),
         "empty split", "", None),
        ("no duplicates within a split", SOFT,
         gxe.ExpectCompoundColumnsToBeUnique(column_list=["split", "content_hash"],
                                             severity="warning"),
         "", "", None),
        ("no image in more than one split", SOFT,
         gxe.ExpectColumnValuesToBeInSet(column="n_splits_with_content", value_set=[1],
                                         severity="warning"),
         "", "", None),
    ]
    with_masks = "has_mask" in df.columns
    if with_masks:
        checks += [
            ("mask shape matches image", HARD,
             gxe.ExpectColumnValuesToBeInSet(column="mask_shape_ok", value_set=[True]),
             "mask shape does not match image", " has mask shape {mask_shape}, image shape {shape}",
             "mask_shape_ok"),
            ("mask values are integers", HARD,
             gxe.ExpectColumnValuesToBeBetween(column="mask_nonint", min_value=0, max_value=0),
             "mask values are not integers", " has {} non-integer value(s)", "mask_nonint"),
            ("mask values >= 0", HARD,
             gxe.ExpectColumnValuesToBeBetween(column="mask_min", min_value=0),
             "mask values below 0", " has min {}", "mask_min"),
        ]
        if num_mask_classes is not None:
            k = int(num_mask_classes)
            checks.append(
                (f"mask values < {k}", HARD,
                 gxe.ExpectColumnValuesToBeBetween(column="mask_max", max_value=k,
                                                   strict_max=True),
                 f"mask values >= {k} (num_mask_classes)", " has max {}", "mask_max"))
        checks.append(
            (f"mask foreground fraction <= {max_foreground_fraction:g}", SOFT,
             gxe.ExpectColumnValuesToBeBetween(column="mask_foreground_fraction",
                                               max_value=max_foreground_fraction,
                                               severity="warning"),
             f"mask foreground fraction above {max_foreground_fraction:g}",
             " has foreground fraction {}", "mask_foreground_fraction"))

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_definition = (
        context.data_sources.add_pandas("medsec")
        .add_dataframe_asset("image_table")
        .add_batch_definition_whole_dataframe("all_images")
    )
    suite = context.suites.add(gx.ExpectationSuite(name="medsec_image_table"))
    for name, severity, expectation, *_ in checks:
        expectation.meta = {"medsec_name": name, "medsec_severity": severity}
        suite.add_expectation(expectation)
    result_format = {"result_format": "COMPLETE",
                     "unexpected_index_column_names": ["split", "index"],
                     "return_unexpected_index_query": False}
    batch = batch_definition.get_batch(batch_parameters={"dataframe": df})
    run = batch.validate(suite, result_format=result_format)

    by_name = {name: (severity, prefix, detail, column)
               for name, severity, _, prefix, detail, column in checks}
    hard_failures: list[str] = []
    warnings: list[str] = []
    expectations: list[dict[str, Any]] = []
    for res in run.results:
        config = res.expectation_config
        name = (config.meta or {}).get("medsec_name", config.type)
        severity, prefix, detail, column = by_name.get(name, (HARD, config.type, "", None))
        result = dict(res.result or {})
        info = res.exception_info or {}
        raised = bool(info.get("raised_exception")) if isinstance(info, dict) else False
        expectations.append({
            "name": name, "type": config.type, "severity": severity,
            "success": bool(res.success), "engine": "great_expectations",
            "observed": _gx_observed(result),
            **({"exception": str(info.get("exception_message"))} if raised else {}),
        })
        if not res.success and severity == SOFT and column is not None and not raised:
            warnings.extend(_per_split_messages(prefix, detail, result, column, split_names, df))
        if res.success or severity != HARD:
            continue
        if raised:
            hard_failures.append(f"{name}: could not be checked ({info.get('exception_message')})")
        elif column is None:  # the empty-split check
            missing = result.get("partial_missing_list") or [
                s for s in split_names if not (df["split"] == s).any()
            ]
            hard_failures.append(f"empty split(s): {', '.join(map(str, missing))} (0 images)")
        else:
            hard_failures.extend(
                _per_split_messages(prefix, detail, result, column, split_names, df)
            )

    # Soft: duplicates (GX flagged them; pandas names the groups).
    within, across = _duplicate_groups(df)
    for split in split_names:
        groups = [g for g in within if g["split"] == split]
        if groups:
            n_img = sum(len(g["indices"]) for g in groups)
            example = ", ".join(f"{split}[{i}]" for i in groups[0]["indices"][:4])
            conflicts = sum(_conflicting(g) for g in groups)
            warnings.append(
                f"duplicate images within {split}: {len(groups)} group(s) of identical images, "
                f"{n_img} image(s), {n_img - len(groups)} redundant, {conflicts} group(s) with "
                f"conflicting labels (e.g. {example})"
            )
    if across:
        pairs = sorted({"/".join(g["splits"]) for g in across})
        n_img = sum(len(g["members"]) for g in across)
        warnings.append(
            f"images shared between splits (possible leakage): {len(across)} group(s), "
            f"{n_img} image(s) across {', '.join(pairs)}, "
            f"{sum(_conflicting(g) for g in across)} group(s) with conflicting labels "
            f"(e.g. {', '.join(across[0]['members'])})"
        )
    gx_soft = {e["name"]: e["success"] for e in expectations if e["severity"] == SOFT}
    if not gx_soft.get("no duplicates within a split", True) and not within:
        warnings.append("GX reported duplicate (split, content_hash) rows")
    if not gx_soft.get("no image in more than one split", True) and not across:
        warnings.append("GX reported images shared between splits")

    # Soft: class balance per split (pandas; a missing class has no row for GX to check).
    class_counts = _class_counts(df, split_names, num_classes)
    n_images = {s: int((df["split"] == s).sum()) for s in split_names}
    class_names = meta.get("class_names") or []
    balance_ok = True
    fractions: dict[str, dict[int, float]] = {}
    for split in split_names:
        total = n_images[split]
        fractions[split] = {c: (class_counts[split][c] / total if total else 0.0)
                            for c in range(num_classes)}
        if not total:
            continue
        for c in range(num_classes):
            frac = fractions[split][c]
            if frac < min_class_fraction:
                balance_ok = False
                label = f"class {c}" + (f" ({class_names[c]})" if c < len(class_names) else "")
                state = "absent" if frac == 0 else f"{frac:.1%} of {total} image(s)"
                warnings.append(
                    f"class imbalance in {split}: {label} is {state} "
                    f"(below min_class_fraction {min_class_fraction:.1%})"
                )
    expectations.append({
        "name": f"class fraction >= {min_class_fraction:g} per split", "type":
        "class_fraction_per_split", "severity": SOFT, "success": balance_ok, "engine": "pandas",
        "observed": _jsonable({s: {c: round(f, 4) for c, f in fr.items()}
                               for s, fr in fractions.items()}),
    })

    return ValidationReport(
        success=not hard_failures,
        hard_failures=hard_failures,
        warnings=warnings,
        duplicates_within=within,
        duplicates_across=across,
        class_counts=class_counts,
        n_images=n_images,
        expectations=expectations,
        num_classes=num_classes,
        expected_shape=list(expected_shape),
        min_class_fraction=float(min_class_fraction),
        gx_version=str(gx.__version__),
        mask_stats=_mask_stats(df, split_names) if with_masks else None,
        **meta,
    )
