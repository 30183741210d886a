"""Patient-level splits (grouped, stratified, seeded) and the leakage checks of validation
(a patient, a study or a near-duplicate image in two splits fails, with counts)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from PIL import Image

from medsec.config import load_config
from medsec.data.prepare import prepare_dataset
from medsec.data.splits import patient_splits
from medsec.data.validation import raise_if_failed, validate_dataset
from medsec.data.validation.leakage import near_groups
from medsec.errors import ValidationFailed
from medsec.stages.data import data_source
from tests.unit.own_data_fixtures import make_manifest, manifest_dataset


def _cohort(n_patients: int = 60, seed: int = 0):
    rng = np.random.default_rng(seed)
    patients, labels = [], []
    for p in range(n_patients):
        label = int(p % 3 == 0)  # one third positive
        for _ in range(int(rng.integers(1, 6))):  # 1-5 images per patient
            patients.append(f"P{p}")
            labels.append(label)
    return patients, labels


def test_no_patient_crosses_splits_and_classes_are_stratified():
    patients, labels = _cohort()
    assigned = patient_splits(patients, labels, [None] * len(patients), 0.15, 0.15, seed=0)
    where: dict[str, set[str]] = {}
    for patient, split in zip(patients, assigned, strict=True):
        where.setdefault(patient, set()).add(split)
    assert all(len(s) == 1 for s in where.values())  # never by image
    for split in ("train", "val", "test"):
        mine = [lab for lab, s in zip(labels, assigned, strict=True) if s == split]
        share = len({p for p, s in zip(patients, assigned, strict=True) if s == split}) / 60
        assert 0.08 <= share <= 0.8 if split == "train" else 0.08 <= share <= 0.25
        # stratified: every split holds about a third positives (patient-level stratum)
        assert 0.15 <= np.mean(mine) <= 0.55, (split, np.mean(mine))


def test_splits_are_seeded_and_respect_fixed_rows():
    patients, labels = _cohort()
    none = [None] * len(patients)
    a = patient_splits(patients, labels, none, 0.15, 0.15, seed=1)
    assert a == patient_splits(patients, labels, none, 0.15, 0.15, seed=1)
    assert a != patient_splits(patients, labels, none, 0.15, 0.15, seed=2)
    fixed = list(none)
    fixed[0] = "test"  # patient P0's first image pinned: all of P0 goes to test
    b = patient_splits(patients, labels, fixed, 0.15, 0.15, seed=1)
    assert {s for p, s in zip(patients, b, strict=True) if p == "P0"} == {"test"}


def test_near_groups_link_images_within_the_distance():
    hashes = np.asarray([0b0, 0b111, 0b1, 0xFFFF], np.uint64)
    assert list(near_groups(hashes, 1)) == [0, 1, 0, 3]
    assert list(near_groups(hashes, 3)) == [0, 0, 0, 3]
    assert list(near_groups(hashes, 0)) == [0, 2, 1, 3]


def _prepare(tmp_path, rows, *extra):
    make_manifest(tmp_path, rows)
    cfg = load_config(overrides=["dataset.source=manifest", "dataset.name=own",
                                 "dataset.path=manifest.csv", f"dataset.data_dir={tmp_path}",
                                 "dataset.image_size=32", *extra])
    return prepare_dataset(data_source(cfg), tmp_path / "prepared")


def _validate(data):
    return validate_dataset(data, data.num_classes, data.image_shape, 0.0,
                            near_duplicate_distance=4)


def test_clean_own_data_passes_the_leakage_checks(tmp_path):
    data = _prepare(tmp_path, manifest_dataset(tmp_path, n_patients=5, per_patient=2, size=32))
    report = _validate(data)
    assert report.success, report.hard_failures
    assert report.leakage["patients_across"] == 0 and report.leakage["studies_across"] == 0
    assert report.leakage["near_duplicate_groups_across"] == 0
    assert report.summary_metrics()["n_patients_across"] == 0


def test_planted_cross_split_near_duplicate_is_detected(tmp_path):
    rows = manifest_dataset(tmp_path, n_patients=5, per_patient=2, size=32)
    first = rows[0]
    original = np.asarray(Image.open(tmp_path / first["path"]))
    # the same picture, re-encoded as JPEG at another size, under another patient, in test
    Image.fromarray(original).resize((40, 40)).save(tmp_path / "img/copy.jpg", quality=90)
    rows = [first | {"split": "train"}, *rows[1:],
            {"path": "img/copy.jpg", "label": first["label"], "patient_id": "OTHER",
             "study_id": "X1", "site": "hospital9", "split": "test"}]
    data = _prepare(tmp_path, rows)
    report = _validate(data)
    assert not report.success
    assert report.leakage["near_duplicate_groups_across"] == 1
    assert report.leakage["near_duplicate_groups_images_across"] == 2
    assert report.leakage["patients_across"] == 0  # a different (pseudonymous) patient
    message = next(m for m in report.hard_failures if "near-duplicate" in m)
    assert "1 near-duplicate groups, 2 image(s) across train/test" in message
    with pytest.raises(ValidationFailed, match="near-duplicate"):
        raise_if_failed(report)
    # the oracle: imagehash on the two files puts them within the distance
    import imagehash

    distance = (imagehash.phash(Image.open(tmp_path / first["path"]))
                - imagehash.phash(Image.open(tmp_path / "img/copy.jpg")))
    assert distance <= 4


def test_manifest_putting_a_patient_in_two_splits_fails_with_counts(tmp_path):
    rows = manifest_dataset(tmp_path, n_patients=5, per_patient=2, size=32)
    rows[0] |= {"split": "train"}
    rows[1] |= {"split": "val"}  # same patient (MRN0000), other study, other split
    data = _prepare(tmp_path, rows)
    report = _validate(data)
    assert not report.success
    assert report.leakage["patients_across"] == 1 and report.leakage["studies_across"] == 0
    text = " ".join(report.hard_failures)
    assert "patients in more than one split (leakage): 1 patients, 2 image(s) across" in text
    counts = Counter(data.splits["train"].patient_ids) + Counter(data.splits["val"].patient_ids)
    assert max(counts.values()) >= 2
