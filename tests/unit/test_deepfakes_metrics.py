"""Frechet distance, k-NN precision/recall, memorisation and generator membership metrics."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from medsec.deepfakes.features import penultimate_features
from medsec.metrics.generative import (
    frechet_distance,
    knn_precision_recall,
    memorisation_metrics,
    synthetic_membership_scores,
)
from medsec.metrics.privacy import mia_metrics
from medsec.models.factory import build_classifier


def _gauss(n: int, d: int, seed: int, shift: float = 0.0, scale: float = 1.0) -> np.ndarray:
    return np.random.RandomState(seed).randn(n, d) * scale + shift


def test_frechet_identical_sets_is_zero_and_shift_grows_it():
    a = _gauss(200, 8, 0)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    same_dist = frechet_distance(a, _gauss(200, 8, 1))
    shifted = frechet_distance(a, _gauss(200, 8, 1, shift=1.0))
    more = frechet_distance(a, _gauss(200, 8, 1, shift=2.0))
    assert same_dist < shifted < more
    assert shifted == pytest.approx(8.0, rel=0.2)  # |mu diff|^2 = 8 x 1^2
    assert frechet_distance(a, _gauss(200, 8, 1, scale=2.0)) > 5 * same_dist


def test_frechet_matches_the_scipy_sqrtm_formula():
    a, b = _gauss(50, 5, 0), _gauss(60, 5, 1, shift=0.3, scale=1.5)
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ref = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(a, b) == pytest.approx(ref, rel=1e-6)


def test_frechet_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="dimensions differ"):
        frechet_distance(_gauss(10, 3, 0), _gauss(10, 4, 0))
    bad = _gauss(10, 3, 0)
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(bad, _gauss(10, 3, 0))


def test_knn_precision_recall_sanity():
    real = _gauss(300, 4, 0)
    assert knn_precision_recall(real, real, k=3) == {"precision": 1.0, "recall": 1.0}
    far = knn_precision_recall(real, _gauss(300, 4, 1, shift=50.0), k=3)
    assert far == {"precision": 0.0, "recall": 0.0}
    # Mode collapse: every fake near one real point -> faithful but no coverage.
    collapsed = real[:1] + 0.01 * _gauss(300, 4, 2)
    pr = knn_precision_recall(real, collapsed, k=3)
    assert pr["precision"] > 0.9 and pr["recall"] < 0.1
    with pytest.raises(ValueError, match="k must be"):
        knn_precision_recall(real[:3], real[:3], k=3)


def test_memorisation_detects_copies_of_training_images():
    train, holdout = _gauss(200, 16, 0), _gauss(100, 16, 1)
    copies = memorisation_metrics(train[:50] + 1e-4, train, holdout)
    assert copies["copy_fraction"] == 1.0 and copies["nn_distance_ratio"] < 0.01
    fresh = memorisation_metrics(_gauss(100, 16, 2), train, holdout)
    assert fresh["copy_fraction"] < 0.1 and 0.7 < fresh["nn_distance_ratio"] < 1.3


def test_generator_membership_auc_is_high_for_copies_and_chance_otherwise():
    members, nonmembers = _gauss(100, 16, 0), _gauss(100, 16, 1)
    leaky = mia_metrics(*synthetic_membership_scores(members, nonmembers, members + 0.01))
    assert leaky["mia_auc"] == 1.0
    fair = mia_metrics(*synthetic_membership_scores(members, nonmembers, _gauss(300, 16, 2)))
    assert 0.35 < fair["mia_auc"] < 0.65


def test_penultimate_features_are_the_last_linear_input():
    model = build_classifier("small_cnn", 1, 2, (28, 28))
    feats = penultimate_features(model, torch.rand(5, 1, 28, 28))
    assert feats.shape == (5, 1024)
    assert model.training  # mode restored
    with pytest.raises(ValueError, match="no nn.Linear"):
        penultimate_features(nn.Conv2d(1, 1, 3), torch.rand(2, 1, 8, 8))
