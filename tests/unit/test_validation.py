"""Data validation (real Great Expectations, no mocks): PneumoniaMNIST, phantoms, bad data."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pytest

from medsec.data.phantoms import write_phantoms
from medsec.data.registry import load_dataset
from medsec.data.types import ImageDataset
from medsec.data.validation import (
    ValidationReport,
    image_table,
    raise_if_failed,
    validate_dataset,
    write_report,
)
from medsec.errors import DataError, ValidationFailed

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_DATASETS = REPO_ROOT.parent / "shared" / "datasets"
PNEUMONIA = SHARED_DATASETS / "pneumoniamnist.npz"
SHAPE = (1, 8, 8)


def _split(n: int, seed: int, labels: np.ndarray | None = None) -> ImageDataset:
    """``n`` distinct random images (multiples of 1/255, like uint8 files), balanced labels."""
    rng = np.random.RandomState(seed)
    images = (rng.randint(0, 256, size=(n, *SHAPE)) / 255.0).astype(np.float32)
    if labels is None:
        labels = np.arange(n, dtype=np.int64) % 2
    return ImageDataset(images, labels.astype(np.int64))


def _clean_splits() -> dict[str, ImageDataset]:
    return {"train": _split(40, 1), "val": _split(20, 2), "test": _split(20, 3)}


def _json_roundtrip(report: ValidationReport) -> dict:
    return json.loads(json.dumps(report.to_dict(), allow_nan=False))


MASK_CHECKS = ("mask shape matches image", "mask values are integers", "mask values >= 0",
               "mask foreground fraction <= 0.5")


def _mask_split(n: int, seed: int, spatial: tuple[int, ...] = SHAPE[1:]) -> ImageDataset:
    """``n`` distinct images (N, 1, *spatial) with binary masks (N, *spatial): a small cube or
    square lesion in every image of label 1, empty masks for label 0."""
    rng = np.random.RandomState(seed)
    images = (rng.randint(0, 256, size=(n, 1, *spatial)) / 255.0).astype(np.float32)
    labels = np.arange(n, dtype=np.int64) % 2
    masks = np.zeros((n, *spatial), np.uint8)
    for i in np.flatnonzero(labels == 1):
        masks[(i, *[slice(2, 5)] * len(spatial))] = 1
    return ImageDataset(images, labels, masks)


def _mask_splits(spatial: tuple[int, ...] = SHAPE[1:]) -> dict[str, ImageDataset]:
    return {"train": _mask_split(20, 1, spatial), "val": _mask_split(10, 2, spatial),
            "test": _mask_split(10, 3, spatial)}


def _with_masks(data: ImageDataset, masks: np.ndarray) -> ImageDataset:
    return ImageDataset(data.images, data.labels, masks)


# --------------------------------------------------------------------------------------------
# PneumoniaMNIST (real data, shared file)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pneumonia():
    if not PNEUMONIA.is_file():
        pytest.skip(f"shared dataset not found: {PNEUMONIA} (see /work/shared/datasets/README.md)")
    return load_dataset("pneumoniamnist", SHARED_DATASETS)


@pytest.fixture(scope="module")
def pneumonia_report(pneumonia):
    return validate_dataset(pneumonia, pneumonia.num_classes, pneumonia.image_shape)


def test_image_table_pneumonia_is_fast_and_complete(pneumonia):
    start = time.perf_counter()
    table = image_table(pneumonia.splits)
    elapsed = time.perf_counter() - start
    print(f"image_table: {len(table)} rows in {elapsed:.3f} s")
    assert elapsed < 2.0
    assert len(table) == 5856
    assert list(table["split"].unique()) == ["train", "val", "test"]
    for column in ("label", "channels", "height", "width", "dtype", "min", "max", "mean",
                   "n_nonfinite", "content_hash"):
        assert column in table.columns
    assert set(table["dtype"]) == {"float32"}
    assert (table["n_nonfinite"] == 0).all() and set(table["shape"]) == {"1x28x28"}
    assert table["min"].min() >= 0.0 and table["max"].max() <= 1.0
    # content_hash = sha1 of the uint8-quantised image bytes
    image = pneumonia.splits["val"].images[7]
    expected = hashlib.sha1(np.rint(image * 255).astype(np.uint8).tobytes()).hexdigest()
    row = table[(table["split"] == "val") & (table["index"] == 7)].iloc[0]
    assert row["content_hash"] == expected
    assert row["mean"] == pytest.approx(float(image.mean()), abs=1e-6)


def test_pneumonia_passes_and_names_duplicates(pneumonia_report, tmp_path):
    report = pneumonia_report
    assert report.success, report.hard_failures
    assert report.n_images == {"train": 4708, "val": 524, "test": 624}
    assert report.class_counts["train"] == {0: 1214, 1: 3494}
    assert report.class_counts["test"] == {0: 234, 1: 390}

    within = report.duplicates_within
    across = report.duplicates_across
    assert within and across
    per_split = {s: [g for g in within if g["split"] == s] for s in report.n_images}
    print(
        "PneumoniaMNIST duplicates within: "
        + ", ".join(f"{s} {len(gs)} group(s) / {sum(len(g['indices']) for g in gs)} image(s)"
                    for s, gs in per_split.items())
        + f"; across: {len(across)} group(s) / {sum(len(g['members']) for g in across)} image(s) "
        f"({sorted({'/'.join(g['splits']) for g in across})})"
    )
    for group in within:
        assert len(group["indices"]) >= 2 and len(group["content_hash"]) == 40
    for group in across:
        assert len(group["splits"]) >= 2
        assert all("[" in m for m in group["members"])
    assert any("duplicate images within train" in w for w in report.warnings)
    assert any("shared between splits" in w for w in report.warnings)

    metrics = report.summary_metrics()
    assert metrics["n_train"] == 4708 and metrics["n_hard_failures"] == 0
    assert metrics["n_duplicate_groups_within"] == len(within) > 0
    assert metrics["n_duplicate_groups_across"] == len(across) > 0
    assert metrics["class_fraction_train_1"] == pytest.approx(3494 / 4708, abs=1e-6)
    assert all(isinstance(v, int | float) for v in metrics.values())

    markdown = report.to_markdown()
    assert markdown.index("PASSED") < markdown.index("## Warnings")
    assert "Duplicate images within splits" in markdown and "shared between splits" in markdown
    first = within[0]
    assert f"{first['split']}[{first['indices'][0]}]" in markdown
    assert across[0]["members"][0] in markdown
    short = report.to_markdown(max_groups=2)
    assert f"and {len(within) - 2} more group(s)" in short

    data = _json_roundtrip(report)
    assert data["success"] is True and data["verification"].startswith("unverified")
    paths = write_report(report, tmp_path / "validation")
    assert json.loads(paths["json"].read_text())["n_images"]["val"] == 524
    assert paths["markdown"].read_text() == markdown
    raise_if_failed(report)  # no exception


def test_pneumonia_duplicates_are_identical_images(pneumonia, pneumonia_report):
    for group in pneumonia_report.duplicates_within[:5]:
        images = pneumonia.splits[group["split"]].images[group["indices"]]
        assert (images == images[0]).all()
    for group in pneumonia_report.duplicates_across[:5]:
        members = [m.rstrip("]").split("[") for m in group["members"]]
        images = [pneumonia.splits[s].images[int(i)] for s, i in members]
        assert all((im == images[0]).all() for im in images)


# --------------------------------------------------------------------------------------------
# Synthetic phantoms
# --------------------------------------------------------------------------------------------


def test_phantoms_are_clean(tmp_path, monkeypatch):
    monkeypatch.delenv("MEDSEC_DATA_DIR", raising=False)
    write_phantoms(tmp_path / "phantoms.npz", n_train=40, n_val=12, n_test=12, size=28, seed=0)
    data = load_dataset("phantoms", tmp_path)
    table = image_table(data.splits)
    assert table["has_mask"].all()
    assert table["mask_foreground_fraction"].between(0, 1).all()
    assert (table.loc[table["label"] == 0, "mask_foreground_fraction"] == 0).all()

    assert table["mask_shape_ok"].all() and (table["mask_nonint"] == 0).all()
    assert table["mask_min"].min() == 0 and table["mask_max"].max() == 1

    report = validate_dataset(data, data.num_classes, data.image_shape, num_mask_classes=2)
    assert report.success, report.hard_failures
    assert report.warnings == []
    assert report.duplicates_within == [] and report.duplicates_across == []
    assert report.class_counts == {"train": {0: 20, 1: 20}, "val": {0: 6, 1: 6},
                                   "test": {0: 6, 1: 6}}
    assert report.verification.startswith("synthetic")
    mask_checks = {e["name"]: e for e in report.expectations if e["name"].startswith("mask")}
    assert set(mask_checks) == set(MASK_CHECKS) | {"mask values < 2"}
    assert all(e["success"] and e["engine"] == "great_expectations"
               for e in mask_checks.values())
    assert report.mask_stats is not None and set(report.mask_stats) == {"train", "val", "test"}
    train = report.mask_stats["train"]
    assert train["n_masks"] == 40 and train["fraction_with_foreground"] == pytest.approx(0.5)
    lesion = table[(table["split"] == "train") & (table["label"] == 1)]
    assert train["mean_foreground_fraction"] == pytest.approx(
        lesion["mask_foreground_fraction"].sum() / 40)
    metrics = report.summary_metrics()
    assert metrics["n_duplicate_groups_within"] == 0 and metrics["n_warnings"] == 0
    assert metrics["mask_foreground_fraction_train"] == pytest.approx(
        train["mean_foreground_fraction"], abs=1e-6)
    assert metrics["mask_images_with_foreground_val"] == pytest.approx(0.5)
    markdown = report.to_markdown()
    assert "**Verdict: PASSED**" in markdown and "## Masks" in markdown
    assert _json_roundtrip(report)["mask_stats"]["test"]["n_masks"] == 12


# --------------------------------------------------------------------------------------------
# Hard failures
# --------------------------------------------------------------------------------------------


def _nan_pixel(splits):
    images = splits["val"].images.copy()
    images[3, 0, 2, 5] = np.nan
    splits["val"] = ImageDataset(images, splits["val"].labels)


def _bad_label(splits):
    labels = splits["train"].labels.copy()
    labels[12] = 5
    labels[30] = -1
    splits["train"] = ImageDataset(splits["train"].images, labels)


def _bright_pixel(splits):
    images = splits["test"].images.copy()
    images[2, 0, 0, 0] = 1.5
    splits["test"] = ImageDataset(images, splits["test"].labels)


def _wrong_shape(splits):
    test = _split(20, 3)
    images = np.zeros((20, 1, 10, 10), np.float32)
    images[:, :, :8, :8] = test.images
    splits["test"] = ImageDataset(images, test.labels)


def _wrong_dtype(splits):
    splits["val"] = ImageDataset(splits["val"].images.astype(np.float64), splits["val"].labels)


def _empty_split(splits):
    splits["val"] = ImageDataset(np.zeros((0, *SHAPE), np.float32), np.zeros(0, np.int64))


@pytest.mark.parametrize(
    ("corrupt", "expected"),
    [
        (_nan_pixel, ["NaN/inf pixels: 1 image(s) in val (first: val[3]"]),
        (_bad_label, ["labels outside {0,1}: 2 image(s) in train (first: train[12]=5)"]),
        (_bright_pixel, ["pixel values above 1: 1 image(s) in test (first: test[2] has max 1.5)"]),
        (_wrong_shape, ["image shape not 1x8x8 (C x H x W): 20 image(s) in test "
                        "(first: test[0] has shape 1x10x10)"]),
        (_wrong_dtype, ["image dtype not float32: 20 image(s) in val (first: val[0] has dtype "
                        "float64)"]),
        (_empty_split, ["empty split(s): val"]),
    ],
    ids=["nan", "label", "above_one", "shape", "dtype", "empty_split"],
)
def test_hard_failures_name_split_and_index(corrupt, expected):
    splits = _clean_splits()
    corrupt(splits)
    report = validate_dataset(splits, num_classes=2, expected_shape=SHAPE)
    assert report.success is False
    assert len(report.hard_failures) == len(expected), report.hard_failures
    for prefix, message in zip(expected, report.hard_failures, strict=True):
        assert message.startswith(prefix), message
    with pytest.raises(ValidationFailed) as info:
        raise_if_failed(report)
    assert expected[0] in str(info.value)
    assert "FAILED" in report.to_markdown().split("## Hard failures")[0]
    assert report.summary_metrics()["n_hard_failures"] == len(expected)
    _json_roundtrip(report)


def test_several_failures_are_all_reported():
    splits = _clean_splits()
    _nan_pixel(splits)
    _bad_label(splits)
    _bright_pixel(splits)
    report = validate_dataset(splits, num_classes=2, expected_shape=SHAPE)
    assert not report.success and len(report.hard_failures) == 3
    failed = {e["name"] for e in report.expectations if not e["success"]}
    assert {"labels in range", "no NaN/inf pixels", "pixel max <= 1"} <= failed
    with pytest.raises(ValidationFailed, match=r"3 hard failure\(s\)"):
        raise_if_failed(report)


def test_mismatched_labels_raise_data_error():
    splits = _clean_splits()
    splits["val"] = ImageDataset(splits["val"].images, splits["val"].labels[:-1])
    with pytest.raises(DataError, match="val"):
        image_table(splits)


# --------------------------------------------------------------------------------------------
# Soft expectations
# --------------------------------------------------------------------------------------------


def test_imbalance_and_duplicates_are_warnings_only(tmp_path):
    splits = _clean_splits()
    labels = np.zeros(40, np.int64)
    labels[:2] = 1  # 5% class 1 in train
    images = splits["train"].images.copy()
    images[7] = images[3]  # duplicate within train
    splits["train"] = ImageDataset(images, labels)
    test_images = splits["test"].images.copy()
    test_images[4] = images[10]  # train[10] leaks into test
    splits["test"] = ImageDataset(test_images, splits["test"].labels)

    report = validate_dataset(splits, num_classes=2, expected_shape=SHAPE, min_class_fraction=0.1)
    assert report.success, report.hard_failures
    assert any(w.startswith("class imbalance in train: class 1 is 5.0%") for w in report.warnings)
    assert not any("imbalance in val" in w or "imbalance in test" in w for w in report.warnings)
    assert [(g["split"], g["indices"]) for g in report.duplicates_within] == [("train", [3, 7])]
    assert [g["members"] for g in report.duplicates_across] == [["train[10]", "test[4]"]]
    soft = {e["name"]: e for e in report.expectations if e["severity"] == "soft"}
    assert not any(e["success"] for e in soft.values())
    assert {e["engine"] for e in report.expectations} == {"great_expectations"}
    # GX's own counts: 1 (split, class) row under 10%, 2 rows in a within-split duplicate group
    assert soft["class fraction >= 0.1 per split"]["observed"]["unexpected_count"] == 1
    assert soft["no duplicates within a split"]["observed"]["unexpected_count"] == 2
    raise_if_failed(report)  # warnings never raise

    metrics = report.summary_metrics()
    assert metrics["class_fraction_train_1"] == pytest.approx(0.05)
    assert metrics["n_duplicate_images_within"] == 2 and metrics["n_duplicate_images_across"] == 2
    paths = write_report(report, tmp_path)
    assert sorted(p.name for p in paths.values()) == ["report.json", "report.md"]
    assert "train[3], train[7]" in paths["markdown"].read_text()


def test_missing_class_is_a_warning():
    splits = _clean_splits()
    splits["val"] = ImageDataset(splits["val"].images, np.zeros(20, np.int64))
    report = validate_dataset(splits, num_classes=3, expected_shape=None)
    assert report.success
    assert report.expected_shape == list(SHAPE)
    assert report.class_counts["val"] == {0: 20, 1: 0, 2: 0}
    assert any("class 1 is absent" in w and "val" in w for w in report.warnings)
    assert any("class 2 is absent" in w and "train" in w for w in report.warnings)


# --------------------------------------------------------------------------------------------
# Segmentation masks
# --------------------------------------------------------------------------------------------


def test_masks_2d_pass_with_mask_expectations():
    splits = _mask_splits()
    splits["val"] = ImageDataset(splits["val"].images, splits["val"].labels)  # no masks
    table = image_table(splits)
    assert list(table.loc[table["split"] == "val", "has_mask"].unique()) == [False]
    assert table["mask_shape_ok"].all() and (table["mask_nonint"] == 0).all()
    assert table.loc[table["split"] == "val", "mask_min"].isna().all()

    report = validate_dataset(splits, num_classes=2, expected_shape=SHAPE, num_mask_classes=2)
    assert report.success, report.hard_failures
    assert report.warnings == []
    names = {e["name"]: e["success"] for e in report.expectations}
    assert all(names[name] for name in (*MASK_CHECKS, "mask values < 2"))
    assert report.mask_stats["train"] == {
        "n_masks": 20, "mean_foreground_fraction": pytest.approx(0.5 * 9 / 64),
        "fraction_with_foreground": 0.5, "min": 0.0, "max": 1.0}
    assert report.mask_stats["val"]["n_masks"] == 0
    assert report.mask_stats["val"]["mean_foreground_fraction"] is None
    metrics = report.summary_metrics()
    assert metrics["mask_foreground_fraction_test"] == pytest.approx(0.5 * 9 / 64, abs=1e-6)
    assert "mask_foreground_fraction_val" not in metrics
    assert _json_roundtrip(report)["mask_stats"]["val"]["n_masks"] == 0


def test_masks_3d_volumes_pass(tmp_path):
    spatial = (8, 8, 8)
    splits = _mask_splits(spatial)
    assert splits["train"].images.shape == (20, 1, 8, 8, 8)
    assert splits["train"].masks.shape == (20, 8, 8, 8)
    report = validate_dataset(splits, num_classes=2, expected_shape=(1, *spatial),
                              num_mask_classes=2)
    assert report.success, report.hard_failures
    assert report.warnings == []
    assert {*MASK_CHECKS, "mask values < 2"} <= {e["name"] for e in report.expectations}
    assert report.mask_stats["val"]["mean_foreground_fraction"] == pytest.approx(
        0.5 * 27 / 512)
    paths = write_report(report, tmp_path)
    assert json.loads(paths["json"].read_text())["mask_stats"]["train"]["n_masks"] == 20
    assert "## Masks" in paths["markdown"].read_text()


def _mask_wrong_shape(splits):
    splits["val"] = _with_masks(splits["val"], np.zeros((10, 8, 9), np.uint8))


def _mask_half_values(splits):
    masks = splits["train"].masks.astype(np.float32)
    masks[3, 0, :5] = 0.5
    splits["train"] = _with_masks(splits["train"], masks)


def _mask_negative(splits):
    masks = splits["test"].masks.astype(np.int64)
    masks[4, 1, 1] = -1
    splits["test"] = _with_masks(splits["test"], masks)


def _mask_too_large(splits):
    masks = splits["train"].masks.copy()
    masks[6, 2, 2] = 2
    masks[9, 2, 2] = 7
    splits["train"] = _with_masks(splits["train"], masks)


@pytest.mark.parametrize(
    ("corrupt", "expected"),
    [
        (_mask_wrong_shape, ["mask shape does not match image: 10 image(s) in val (first: val[0] "
                             "has mask shape 8x9, image shape 1x8x8)"]),
        (_mask_half_values, ["mask values are not integers: 1 image(s) in train (first: "
                             "train[3] has 5 non-integer value(s))"]),
        (_mask_negative, ["mask values below 0: 1 image(s) in test (first: test[4] has min -1)"]),
        (_mask_too_large, ["mask values >= 2 (num_mask_classes): 2 image(s) in train (first: "
                           "train[6] has max 2)"]),
    ],
    ids=["shape", "non_integer", "negative", "too_large"],
)
def test_mask_hard_failures_name_split_and_index(corrupt, expected):
    splits = _mask_splits()
    corrupt(splits)
    report = validate_dataset(splits, num_classes=2, expected_shape=SHAPE, num_mask_classes=2)
    assert report.success is False
    assert report.hard_failures == expected
    with pytest.raises(ValidationFailed, match="mask"):
        raise_if_failed(report)
    assert report.summary_metrics()["n_hard_failures"] == 1
    _json_roundtrip(report)


def test_mask_class_bound_is_skipped_without_num_mask_classes():
    splits = _mask_splits()
    _mask_too_large(splits)
    report = validate_dataset(splits, num_classes=2, expected_shape=SHAPE)
    assert report.success, report.hard_failures
    assert {e["name"] for e in report.expectations if e["name"].startswith("mask")} == set(
        MASK_CHECKS)
    assert report.mask_stats["train"]["max"] == 7


def test_large_mask_foreground_is_a_warning():
    splits = _mask_splits()
    masks = splits["val"].masks.copy()
    masks[5] = (np.arange(64).reshape(8, 8) < 58).astype(np.uint8)  # 58/64 ~ 0.906
    splits["val"] = _with_masks(splits["val"], masks)
    report = validate_dataset(splits, num_classes=2, expected_shape=SHAPE, num_mask_classes=2,
                              max_foreground_fraction=0.5)
    assert report.success, report.hard_failures
    assert report.warnings == ["mask foreground fraction above 0.5: 1 image(s) in val (first: "
                               "val[5] has foreground fraction 0.90625)"]
    soft = {e["name"]: e for e in report.expectations if e["severity"] == "soft"}
    assert soft["mask foreground fraction <= 0.5"]["success"] is False
    raise_if_failed(report)  # warnings never raise
    relaxed = validate_dataset(splits, num_classes=2, expected_shape=SHAPE,
                               max_foreground_fraction=0.95)
    assert relaxed.warnings == []


def test_mask_count_mismatch_raises_data_error():
    splits = _mask_splits()
    splits["test"] = _with_masks(splits["test"], splits["test"].masks[:-1])
    with pytest.raises(DataError, match="test"):
        validate_dataset(splits, num_classes=2, expected_shape=SHAPE)


def test_no_masks_no_mask_checks():
    report = validate_dataset(_clean_splits(), num_classes=2, expected_shape=SHAPE,
                              num_mask_classes=3)
    assert report.success and report.mask_stats is None
    assert not any(e["name"].startswith("mask") for e in report.expectations)
    assert not any(k.startswith("mask") for k in report.summary_metrics())
    assert "## Masks" not in report.to_markdown()
    assert "mask_shape_ok" not in image_table(_clean_splits()).columns


def test_failing_files_are_named_in_the_error_only():
    splits = _mask_splits()
    _mask_negative(splits)
    report = validate_dataset(splits, num_classes=2, expected_shape=SHAPE, num_mask_classes=2)
    names = {"test": [f"case{i:03d}.png" for i in range(10)]}
    with pytest.raises(ValidationFailed, match=r"test\[4\] \(case004\.png\)"):
        raise_if_failed(report, names)
    assert "case004" not in json.dumps(_json_roundtrip(report)) + report.to_markdown()
