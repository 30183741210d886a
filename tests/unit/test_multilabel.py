"""Multi-label manifests (a ``labels`` column, ``"a|b"``): multi-hot labels in ``prepared/``,
BCE training, per-finding and macro AUC checked against scikit-learn, validation, and the
stages that refuse multi-label data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.metrics import f1_score, roc_auc_score

from medsec.config import load_config
from medsec.data.prepare import prepare_dataset, read_info
from medsec.data.types import ImageDataset
from medsec.data.validation import validate_dataset
from medsec.metrics.classification import classification_metrics, confusion
from medsec.stages import attack as attack_stage
from medsec.stages import classifier
from medsec.stages.data import data_source
from medsec.training.checkpoint import load_classifier, save_classifier
from medsec.training.job import evaluate_classifier
from medsec.training.module import classification_loss
from tests.unit.own_data_fixtures import make_manifest

FINDINGS = ("effusion", "nodule", "opacity")


def _image(rng: np.random.Generator, size: int, hot: np.ndarray) -> np.ndarray:
    """A smooth random background; effusion = bright bottom band, nodule = bright disc in the
    centre, opacity = bright left band."""
    image = np.kron(rng.random((4, 4)), np.ones((size // 4, size // 4))) * 0.4
    if hot[0]:
        image[-size // 4:, :] = 0.95
    if hot[1]:
        yy, xx = np.mgrid[:size, :size]
        image[(yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 5) ** 2] = 1.0
    if hot[2]:
        image[:, : size // 4] = 0.9
    return np.round(image * 255).astype(np.uint8)


def multilabel_manifest(root: Path, n_patients: int = 40, per_patient: int = 2,
                        size: int = 16, seed: int = 3) -> np.ndarray:
    """PNGs + ``manifest.csv`` with a ``labels`` column (0 to 3 findings per image, some
    images with none); returns the multi-hot rows in manifest order (N, 3)."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows, hots = [], []
    for p in range(n_patients):
        for k in range(per_patient):
            hot = rng.random(3) < 0.45
            rel = f"img/p{p:02d}_{k}.png"
            Image.fromarray(_image(rng, size, hot)).save(root / rel)
            rows.append({"path": rel, "labels": "|".join(f for f, h in zip(FINDINGS, hot,
                                                                            strict=True) if h),
                         "patient_id": f"MRN{p:04d}", "site": f"hospital{p % 3}"})
            hots.append(hot)
    make_manifest(root, rows)
    return np.asarray(hots, np.float32)


def _cfg(root: Path, *extra: str):
    return load_config(overrides=[
        "dataset.source=manifest", "dataset.name=own", "dataset.path=manifest.csv",
        f"dataset.data_dir={root}", "dataset.image_size=16", "model.name=small_cnn",
        "train.epochs=6", "train.batch_size=16", "train.lr=0.003", "train.num_threads=1",
        *extra])


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("multilabel")
    hots = multilabel_manifest(root)
    cfg = _cfg(root)
    return cfg, prepare_dataset(data_source(cfg), root / "prepared"), hots, root


def test_prepared_labels_are_multi_hot_per_finding(prepared):
    _, data, hots, root = prepared
    assert data.task == "multilabel" and data.class_names == list(FINDINGS)
    assert data.num_classes == 3
    info = read_info(root / "prepared")
    assert info["task"] == "multilabel"
    labels = np.concatenate([data.splits[s].labels for s in ("train", "val", "test")])
    assert labels.dtype == np.float32 and labels.shape == (len(hots), 3)
    # the same multiset of rows as the manifest (the patient-level split reorders them)
    assert sorted(map(tuple, labels.tolist())) == sorted(map(tuple, hots.tolist()))
    # each finding's pixel signature matches its label column
    for split in data.splits.values():
        bottom = split.images[:, 0, -4:, 4:].mean(axis=(1, 2)) > 0.9
        np.testing.assert_array_equal(bottom, split.labels[:, 0] == 1)
    report = validate_dataset(data, num_classes=data.num_classes, expected_shape=data.image_shape)
    assert report.success, report.hard_failures


def test_bce_training_and_macro_auc_equal_sklearn(prepared, tmp_path):
    cfg, data, _, _ = prepared
    trained = classifier.train(cfg, data)
    history = trained.fit.history
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert trained.meta["task"] == "multilabel"
    _, meta = load_classifier(save_classifier(tmp_path / "m.pt", trained.model, trained.meta))
    assert meta["task"] == "multilabel"  # recorded in the model card
    test = data.splits["test"]
    ev = evaluate_classifier(trained.model, test, data.num_classes)
    y, probs = test.labels.astype(int), torch.sigmoid(ev.logits.double()).numpy()
    assert all(len(np.unique(y[:, k])) == 2 for k in range(3))  # every AUC is defined
    m = ev.metrics
    assert m["test_auc"] == pytest.approx(roc_auc_score(y, probs, average="macro"), abs=1e-12)
    for k in range(3):
        assert m[f"test_auc_label_{k}"] == pytest.approx(roc_auc_score(y[:, k], probs[:, k]))
    preds = (probs >= 0.5).astype(int)
    assert m["test_acc"] == pytest.approx((preds == y).mean())  # macro accuracy at 0.5
    assert m["test_exact_match"] == pytest.approx((preds == y).all(axis=1).mean())
    assert m["test_f1"] == pytest.approx(f1_score(y, preds, average="macro", zero_division=0))
    bce = F.binary_cross_entropy_with_logits(ev.logits.double(), torch.from_numpy(y).double())
    assert m["test_loss"] == pytest.approx(float(bce), rel=1e-9)
    assert m["test_auc"] > 0.7, m  # three bright, fixed-place findings are learnable
    assert ev.confusion.shape == (3, 2, 2) and ev.confusion.sum() == 3 * len(test)


def test_loss_is_bce_for_multi_hot_and_cross_entropy_otherwise():
    logits = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    hot = torch.tensor([[1, 0, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0], [1, 0, 0]]).float()
    assert torch.allclose(classification_loss(logits, hot),
                          F.binary_cross_entropy_with_logits(logits, hot))
    labels = torch.tensor([0, 2, 1, 1, 0])
    assert torch.equal(classification_loss(logits, labels), F.cross_entropy(logits, labels))
    single = classification_metrics(logits, labels, 3)
    assert "test_exact_match" not in single and "auc_label_0" not in single
    assert confusion(logits, labels, 3).shape == (3, 3)


def test_invalid_multi_hot_values_fail_validation(prepared):
    _, data, _, _ = prepared
    train = data.splits["train"]
    bad = train.labels.copy()
    bad[0, 1] = 0.5
    splits = dict(data.splits) | {"train": ImageDataset(train.images, bad)}
    report = validate_dataset(splits, num_classes=3, expected_shape=data.image_shape)
    assert not report.success
    assert any("labels outside" in f for f in report.hard_failures), report.hard_failures


def test_default_attack_and_defense_lists_skip_class_only_entries_on_multi_label(prepared):
    cfg, data, _, _ = prepared
    # attacks run on multi-label data (tests/unit/test_multilabel_attacks.py); the default
    # suite's class-only entries (deepfool, uap) are skipped with a record, the rest kept
    from medsec.stages import defense

    kept, skipped = attack_stage.applicable(cfg, data)
    assert [(s.field, s.entry) for s in skipped] == [("attack.attacks[2]", "deepfool"),
                                                     ("attack.attacks[5]", "uap")]
    assert len(kept.attack.attacks) == len(cfg.attack.attacks) - 2
    # the default defense list's class-only mahalanobis and smoothing likewise
    kept, skipped = defense.applicable(cfg, data)
    assert [s.entry for s in skipped] == ["mahalanobis", "smoothing"]
    assert [s.name for s in kept.defense.defenses] == ["fast_fgsm_at", "bit_depth", "jpeg"]
