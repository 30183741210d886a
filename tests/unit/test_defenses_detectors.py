"""Detectors separate adversarial from clean images, the detector-aware attack lowers that,
and a detector that was never trained is a clear error."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medsec.attacks import PGD
from medsec.defenses.adaptive import DetectorAware, DetectorAwarePGD
from medsec.defenses.autoencoder import PixelAutoEncoder, Reformer, train_autoencoder
from medsec.defenses.base import DefenseError
from medsec.defenses.build import detector_defense
from medsec.defenses.detectors import (
    MagNetDetector,
    MahalanobisDetector,
    SqueezeDetector,
    detection_metrics,
)
from medsec.defenses.evaluate import evaluate_defense
from medsec.defenses.features import features_and_logits, penultimate_features
from medsec.errors import ConfigError
from tests.unit.attack_fixtures import make_dataset, single_thread, trained_model  # noqa: F401
from tests.unit.defense_fixtures import EVAL

EPS = 8 / 255
FAST = EVAL.model_copy(update={"steps_factor": 2, "square_queries": 30,
                               "detection_attacks": ("pgd",)})


@pytest.fixture(scope="module")
def setup():
    model, x, y = trained_model(3)
    x_train, y_train = make_dataset(300, 3, seed=100)
    x_val, _ = make_dataset(100, 3, seed=300)
    return model, x, y, x_train, y_train, x_val


def test_penultimate_features_are_the_head_input(setup) -> None:
    model, x, *_ = setup
    feats, logits = features_and_logits(model, x[:4])
    assert feats.shape == (4, model.head.in_features)
    assert torch.allclose(model.head(feats), logits, atol=1e-6)
    with pytest.raises(ConfigError, match="no nn.Linear"):
        penultimate_features(nn.Conv2d(1, 2, 3), x[:2])


def test_detection_metrics_known_cases() -> None:
    clean, adv = torch.arange(100.0), torch.arange(100.0) + 1000
    m = detection_metrics(clean, adv)
    assert m == {"auroc": 1.0, "tpr_at_5pct_fpr": 1.0}
    assert detection_metrics(clean, clean)["auroc"] == pytest.approx(0.5)


def test_mahalanobis_detects_pgd_and_the_adaptive_attack_lowers_auroc(setup) -> None:
    model, x, y, x_train, y_train, x_val = setup
    detector = MahalanobisDetector(model).fit(x_train, y_train)
    detector.calibrate(x_val, fpr=0.05)
    result = evaluate_defense(detector_defense(model, detector), x, y, FAST, seed=0)
    m = result.metrics
    assert m["detection_auroc_pgd"] > 0.8
    assert m["detection_auroc_detector_aware_pgd"] < m["detection_auroc_pgd"] - 0.2
    assert m["robust_acc_detector_aware_pgd"] < m["robust_acc_pgd"]  # rejects fewer
    assert m["robust_acc"] == min(m["robust_acc_pgd"], m["robust_acc_square"],
                                  m["robust_acc_detector_aware_pgd"])
    assert 0.0 <= m["clean_reject_rate"] <= 0.2


def test_squeeze_and_magnet_detectors_flag_pgd_examples(setup) -> None:
    model, x, y, x_train, _, x_val = setup
    adv = PGD(model, eps=EPS, alpha=EPS / 4, steps=10)(x, y)
    fooled = model(adv).argmax(1) != y
    ae = train_autoencoder(x_train, channels=(8, 16), epochs=3, seed=0)
    for detector in (SqueezeDetector(model, bits=4, median_size=2), MagNetDetector(model, ae)):
        detector.calibrate(x_val, fpr=0.05)
        m = detection_metrics(detector.scores(x), detector.scores(adv[fooled]))
        assert m["auroc"] > 0.6, (detector.name, m)
    assert Reformer(ae)(x[:2]).shape == x[:2].shape


def test_untrained_detectors_are_clear_errors(setup) -> None:
    model, x, y, *_ = setup
    with pytest.raises(DefenseError, match="not fitted"):
        MahalanobisDetector(model)(x[:2])
    with pytest.raises(DefenseError, match="trained autoencoder"):
        MagNetDetector(model, PixelAutoEncoder(1)).scores(x[:2])
    with pytest.raises(DefenseError, match="trained autoencoder"):
        Reformer(PixelAutoEncoder(1))
    uncalibrated = SqueezeDetector(model)
    with pytest.raises(DefenseError, match="no threshold"):
        DetectorAwarePGD(DetectorAware(model, uncalibrated))
    with pytest.raises(DefenseError, match="no threshold"):
        detector_defense(model, uncalibrated)
    with pytest.raises(DefenseError, match="DetectorAware"):
        DetectorAwarePGD(model)
