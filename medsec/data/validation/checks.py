"""The Great Expectations 1.x suites over the fingerprint tables: the single source of pass/fail.

HARD expectations have GX severity ``critical``, SOFT ones ``warning``. Each carries in its GX
``meta`` how the report words a failure: ``medsec_name``, ``medsec_kind`` (how to read the
result), ``medsec_message`` (prefix) and ``medsec_detail`` (formatted with the first bad row:
``{}`` its value of the checked column, ``{name}`` its other index columns). GX is imported
inside the functions (the import takes seconds).
"""

from __future__ import annotations

import os
from typing import Any

import pandas as pd

PER_SPLIT = "per_split"  # unexpected rows grouped by split, first bad row named
EMPTY_SPLIT = "empty_split"  # the splits GX found missing
WITHIN = "duplicates_within"  # rows sharing (split, content_hash)
ACROSS = "duplicates_across"  # rows whose content is in more than one split
CLASS_BALANCE = "class_balance"  # (split, class) rows below the minimum fraction
CROSSING = "crossing_splits"  # patients / studies / near-duplicate groups in several splits
# index columns returned with every unexpected row (what the report names and groups by)
IMAGE_INDEX = ["split", "index", "label", "content_hash"]
MASK_INDEX = ["shape", "mask_shape"]
CLASS_INDEX = ["split", "label", "count", "n_images"]
LEAKAGE_INDEX = ["split", "index", "patient", "study", "near_group"]
# noun of a crossing check -> the key column grouping its rows (see leakage.leakage_table)
CROSSING_KEYS = {"patient": "patient", "study": "study", "near-duplicate group": "near_group"}


def _gxe() -> Any:
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    import great_expectations.expectations as gxe

    return gxe


def _tag(name: str, expectation: Any, message: str = "", detail: str = "",
         kind: str = PER_SPLIT) -> Any:
    expectation.meta = {"medsec_name": name, "medsec_kind": kind, "medsec_message": message,
                        "medsec_detail": detail}
    return expectation


def image_checks(num_classes: int, expected: str, split_names: list[str]) -> list[Any]:
    """Labels, pixel range, NaN/inf, shape ``expected`` (e.g. ``"1x28x28"``), dtype, empty
    splits (HARD); duplicates within a split and between splits (SOFT)."""
    gxe = _gxe()
    between, in_set = gxe.ExpectColumnValuesToBeBetween, gxe.ExpectColumnValuesToBeInSet
    labels = ("{" + ",".join(map(str, range(num_classes))) + "}" if num_classes <= 5
              else f"{{0,...,{num_classes - 1}}}")
    return [
        _tag("labels in range", in_set(column="label", value_set=list(range(num_classes))),
             f"labels outside {labels}", "={}"),
        _tag("labels present", gxe.ExpectColumnValuesToNotBeNull(column="label"),
             "missing (NaN) labels", "={}"),
        _tag("pixel min >= 0", between(column="min", min_value=0.0), "pixel values below 0",
             " has min {}"),
        _tag("pixel max <= 1", between(column="max", max_value=1.0), "pixel values above 1",
             " has max {}"),
        _tag("no NaN/inf pixels", between(column="n_nonfinite", min_value=0, max_value=0),
             "NaN/inf pixels", " has {} NaN/inf pixel(s)"),
        _tag(f"image shape {expected}", in_set(column="shape", value_set=[expected]),
             f"image shape not {expected} (C x H x W)", " has shape {}"),
        _tag("dtype float32", in_set(column="dtype", value_set=["float32"]),
             "image dtype not float32", " has dtype {}"),
        _tag("no empty split", gxe.ExpectColumnDistinctValuesToContainSet(
            column="split", value_set=split_names), kind=EMPTY_SPLIT),
        _tag("no duplicates within a split", gxe.ExpectCompoundColumnsToBeUnique(
            column_list=["split", "content_hash"], severity="warning"), kind=WITHIN),
        _tag("no image in more than one split", in_set(
            column="n_splits_with_content", value_set=[1], severity="warning"), kind=ACROSS),
    ]


def mask_checks(num_mask_classes: int | None, max_foreground_fraction: float) -> list[Any]:
    """Mask shape, integer values >= 0 (and < ``num_mask_classes`` when given) (HARD);
    foreground fraction <= ``max_foreground_fraction`` in [0, 1] per image (SOFT)."""
    between = _gxe().ExpectColumnValuesToBeBetween
    checks = [
        _tag("mask shape matches image", _gxe().ExpectColumnValuesToBeInSet(
            column="mask_shape_ok", value_set=[True]), "mask shape does not match image",
             " has mask shape {mask_shape}, image shape {shape}"),
        _tag("mask values are integers", between(column="mask_nonint", min_value=0, max_value=0),
             "mask values are not integers", " has {} non-integer value(s)"),
        _tag("mask values >= 0", between(column="mask_min", min_value=0), "mask values below 0",
             " has min {}"),
    ]
    if num_mask_classes is not None:
        k = int(num_mask_classes)
        checks.append(_tag(f"mask values < {k}", between(column="mask_max", max_value=k,
                                                         strict_max=True),
                           f"mask values >= {k} (num_mask_classes)", " has max {}"))
    limit = f"{max_foreground_fraction:g}"
    return [*checks, _tag(f"mask foreground fraction <= {limit}", between(
        column="mask_foreground_fraction", max_value=max_foreground_fraction,
        severity="warning"), f"mask foreground fraction above {limit}",
        " has foreground fraction {}")]


def leakage_checks(near_duplicates: bool) -> list[Any]:
    """No patient, no study and (with ``near_duplicates``) no near-duplicate image group in
    more than one split (HARD; on :func:`~medsec.data.validation.leakage.leakage_table`)."""
    in_set = _gxe().ExpectColumnValuesToBeInSet
    nouns = ["patient", "study"] + (["near-duplicate group"] if near_duplicates else [])
    column = {"patient": "n_splits_patient", "study": "n_splits_study",
              "near-duplicate group": "n_splits_near"}
    return [_tag(f"no {noun} in more than one split", in_set(column=column[noun], value_set=[1]),
                 noun, CROSSING_KEYS[noun], kind=CROSSING) for noun in nouns]


def class_checks(min_class_fraction: float) -> list[Any]:
    """Every class at least ``min_class_fraction`` of each non-empty split (SOFT; on the class
    table, where a class absent from a split still has a row)."""
    check = _gxe().ExpectColumnValuesToBeBetween(column="fraction", min_value=min_class_fraction,
                                                 severity="warning")
    return [_tag(f"class fraction >= {min_class_fraction:g} per split", check,
                 kind=CLASS_BALANCE)]


def run(batches: list[tuple[pd.DataFrame, list[Any], list[str]]]) -> tuple[list[Any], str]:
    """Validate each (table, expectations, index columns) batch in one ephemeral GX context.

    Returns the GX ``ExpectationValidationResult`` objects (batch order, then suite order;
    COMPLETE result format: ``unexpected_index_list`` rows carry the index columns) and the
    GX version.
    """
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("medsec")
    results: list[Any] = []
    for number, (table, expectations, index) in enumerate(batches):
        suite = context.suites.add(gx.ExpectationSuite(name=f"medsec_{number}"))
        for expectation in expectations:
            suite.add_expectation(expectation)
        batch = (source.add_dataframe_asset(f"table_{number}")
                 .add_batch_definition_whole_dataframe("all_rows")
                 .get_batch(batch_parameters={"dataframe": table}))
        results += batch.validate(suite, result_format={
            "result_format": "COMPLETE", "unexpected_index_column_names": index,
            "return_unexpected_index_query": False}).results
    return results, str(gx.__version__)
