"""Data validation: fingerprint tables checked by Great Expectations 1.x suites.

:mod:`.fingerprints` computes the facts once (a row per image, a row per (split, class));
:mod:`.checks` holds the HARD and SOFT expectations, and GX alone decides pass/fail;
:mod:`.report` reads the GX results into a :class:`ValidationReport` (JSON, markdown, metrics).
"""

from __future__ import annotations

import numpy as np

from medsec.data.types import SPLITS, ImageDataset, LoadedDataset
from medsec.data.validation import checks, fingerprints, leakage, report
from medsec.data.validation.fingerprints import image_table
from medsec.data.validation.report import ValidationReport, raise_if_failed, write_report

__all__ = ["ValidationReport", "image_table", "raise_if_failed", "validate_dataset", "write_report"]


def validate_dataset(data: LoadedDataset | dict[str, ImageDataset], num_classes: int,
                     expected_shape: tuple[int, ...] | None, min_class_fraction: float = 0.1,
                     num_mask_classes: int | None = None, max_foreground_fraction: float = 0.5,
                     near_duplicate_distance: int | None = None) -> ValidationReport:
    """Check every split with the Great Expectations suites; see the module docstring.

    ``expected_shape`` is the per-image shape (C, H, W) (or (C, D, H, W) for volumes); None
    means the shape of the first non-empty split. The mask checks run only when some split has
    masks: ``num_mask_classes`` (None: not checked) bounds the mask values to
    ``{0, ..., num_mask_classes-1}``; ``max_foreground_fraction`` is the SOFT limit on the
    fraction of mask pixels > 0 per image. Splits with pseudonymous patient keys (own data)
    are also checked for leakage (HARD): no patient, no study and, unless
    ``near_duplicate_distance`` is None, no group of images whose perceptual hashes differ in
    at most that many bits, in more than one split (:mod:`.leakage`). Returns a
    :class:`ValidationReport` (never raises for bad data; call :func:`raise_if_failed` to
    stop on hard failures). Raises
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
            f"max_foreground_fraction must be in [0, 1], got {max_foreground_fraction}")
    if expected_shape is None:  # the first non-empty split's (the first split's if all are empty)
        first = next((d for d in splits.values() if len(d.labels)), next(iter(splits.values())))
        expected_shape = np.asarray(first.images).shape[1:]
    shape = tuple(int(s) for s in expected_shape)
    names = [s for s in SPLITS if s in splits] + [s for s in splits if s not in SPLITS]
    if any(np.ndim(splits[s].labels) == 2 for s in names):  # multi-hot: L findings + "none"
        num_classes = int(num_classes) + 1  # (see fingerprints.multi_hot_strata)
    images = fingerprints.image_table({s: splits[s] for s in names})
    classes = fingerprints.class_table(images, names, int(num_classes))
    image_checks = checks.image_checks(int(num_classes), fingerprints.shape_str(shape), names)
    index = list(checks.IMAGE_INDEX)
    if "has_mask" in images.columns:
        image_checks += checks.mask_checks(num_mask_classes, float(max_foreground_fraction))
        index += checks.MASK_INDEX
    batches = [(images, image_checks, index),
               (classes, checks.class_checks(float(min_class_fraction)), checks.CLASS_INDEX)]
    if any(splits[s].patient_ids is not None for s in names):
        table = leakage.leakage_table({s: splits[s] for s in names}, near_duplicate_distance)
        batches.append((table, checks.leakage_checks(near_duplicate_distance is not None),
                        checks.LEAKAGE_INDEX))
    results, gx_version = checks.run(batches)
    return report.from_results(
        results, classes, num_classes=int(num_classes), expected_shape=list(shape),
        min_class_fraction=float(min_class_fraction), gx_version=gx_version,
        mask_stats=fingerprints.mask_stats(images, names), **meta)
