"""Randomized smoothing: the Clopper-Pearson bound, the radius formula and CERTIFY agree with
the theory of Cohen et al. 2019 on known cases."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import norm
from torch import Tensor, nn

from medsec.defenses.base import DefenseError, require_classifier
from medsec.defenses.smoothing import (
    ABSTAIN,
    RandomizedSmoothing,
    certified_accuracy,
    certified_radius,
    clopper_pearson_lower,
)
from tests.unit.attack_fixtures import SegmentationModel, single_thread  # noqa: F401


class Linear2(nn.Module):
    """Binary linear classifier on 1x4x4 images: class 1 iff mean(x) > 0.5; the L2 distance
    of x to the boundary is |mean(x) - 0.5| * sqrt(16) (the weight vector is 1/16 each)."""

    def forward(self, x: Tensor) -> Tensor:
        z = (x.flatten(1).mean(1) - 0.5) * 100
        return torch.stack([-z, z], dim=1)


def test_clopper_pearson_known_values() -> None:
    # all successes: the one-sided bound is alpha ** (1 / n) exactly
    assert clopper_pearson_lower(100, 100, 0.001) == pytest.approx(0.001 ** (1 / 100), rel=1e-9)
    # 50/100, two-sided 95 % Clopper-Pearson interval (0.3983, 0.6017)
    assert clopper_pearson_lower(50, 100, 0.025) == pytest.approx(0.3983, abs=1e-4)
    assert clopper_pearson_lower(0, 10, 0.05) == 0.0
    with pytest.raises(ValueError, match="successes"):
        clopper_pearson_lower(11, 10, 0.05)


def test_radius_formula_on_a_known_case() -> None:
    # sigma * Phi^-1(pA): pA = Phi(2) gives exactly 2 sigma;
    # pA = 0.001^(1/100) = 0.93325 gives 1.50048 sigma
    assert certified_radius(norm.cdf(2.0), 0.25) == pytest.approx(0.5, rel=1e-9)
    p = 0.001 ** (1 / 100)
    assert certified_radius(p, 0.5) == pytest.approx(0.5 * norm.ppf(p), rel=1e-12)
    assert certified_radius(p, 1.0) == pytest.approx(1.50048, abs=1e-5)
    assert certified_radius(0.5, 1.0) == -math.inf  # abstain at pA <= 1/2


def test_certify_constant_classifier_matches_closed_form() -> None:
    class AlwaysOne(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return torch.tensor([[0.0, 5.0]]).repeat(x.shape[0], 1)

    smoother = RandomizedSmoothing(AlwaysOne(), 2, sigma=0.25, n0=5, n=100, alpha=0.001)
    cert = smoother.certify(torch.rand(4, 1, 4, 4))
    expected = 0.25 * norm.ppf(0.001 ** (1 / 100))  # 0.3751
    assert cert.prediction.tolist() == [1, 1, 1, 1]
    assert torch.allclose(cert.radius, torch.full((4,), expected, dtype=torch.float64))
    acc = certified_accuracy(cert, torch.tensor([1, 1, 0, 1]), (0.1, 0.375, 0.4))
    assert acc["certified_acc_at_r0.1"] == acc["certified_acc_at_r0.375"] == 0.75
    assert acc["certified_acc_at_r0.4"] == 0.0 and acc["abstain_rate"] == 0.0


def test_certified_radius_is_sound_and_tight_for_a_linear_classifier() -> None:
    # For a linear classifier the smoothed classifier's exact radius is the distance to the
    # hyperplane (Cohen et al., Example); the certified radius is a lower bound close to it.
    x = torch.full((2, 1, 4, 4), 0.5)
    x[0] += 0.03  # distance 0.12 to the boundary, class 1
    x[1] -= 0.05  # distance 0.20, class 0
    dist = torch.tensor([0.12, 0.20], dtype=torch.float64)
    smoother = RandomizedSmoothing(Linear2(), 2, sigma=0.25, n0=20, n=4000, alpha=0.001)
    cert = smoother.certify(x)
    assert cert.prediction.tolist() == [1, 0]
    assert (cert.radius <= dist + 1e-9).all()
    assert (cert.radius >= 0.7 * dist).all(), cert.radius
    again = smoother.certify(x)  # seeded: the same certificates
    assert torch.equal(cert.radius, again.radius)


def test_abstains_near_the_boundary() -> None:
    x = torch.full((1, 1, 4, 4), 0.5)
    cert = RandomizedSmoothing(Linear2(), 2, sigma=0.5, n0=10, n=50, alpha=0.001).certify(x)
    assert cert.prediction.tolist() == [ABSTAIN]
    assert certified_accuracy(cert, torch.tensor([1]), (0.0,))["abstain_rate"] == 1.0


def test_smoothing_rejects_a_segmentation_model() -> None:
    with pytest.raises(DefenseError, match="Segmentation"):
        require_classifier(SegmentationModel(), (1, 28, 28), "smoothing")
