"""Input transformations do what they claim, and BPDA exposes the ones that only hide
gradients: plain PGD sees zero gradients through bit depth / JPEG, BPDA-PGD does not, and
the gradient-masking flags trip."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

from medsec.defenses.build import transform_defense
from medsec.defenses.evaluate import evaluate_defense
from medsec.defenses.transforms import (
    EOT,
    JPEG,
    BitDepth,
    GaussianNoise,
    LowPass,
    MedianFilter,
    Preprocessed,
    straight_through,
)
from tests.unit.attack_fixtures import accuracy, single_thread, trained_model  # noqa: F401
from tests.unit.defense_fixtures import EVAL

FAST = EVAL.model_copy(update={"steps_factor": 2, "square_queries": 50})


@pytest.fixture(scope="module")
def three_class():
    return trained_model(3)


def test_bit_depth_and_median_match_their_definitions() -> None:
    x = torch.rand(4, 2, 9, 11)
    assert torch.equal(BitDepth(3)(x) * 7, torch.round(x * 7))
    for size in (2, 3, 4):
        ref = ndi.median_filter(x.numpy(), size=(1, 1, size, size), mode="reflect")
        assert np.array_equal(MedianFilter(size)(x).numpy(), ref)


def test_jpeg_is_pil_and_low_pass_removes_high_frequencies() -> None:
    x = torch.rand(3, 1, 16, 16)
    y = JPEG(50)(x)
    assert y.shape == x.shape and 0 <= float(y.min()) and float(y.max()) <= 1
    assert torch.equal(y * 255, torch.round(y * 255))  # decoded 8-bit pixels
    assert float((y - x).abs().mean()) > 0.01  # lossy on noise
    checker = 0.5 + 0.4 * ((torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2)
    flat = LowPass(0.5)(checker.float().view(1, 1, 16, 16))
    assert torch.allclose(flat, torch.full_like(flat, 0.7), atol=1e-5)  # only DC survives
    const = torch.full((1, 1, 16, 16), 0.3)
    assert torch.allclose(LowPass(0.2)(const), const, atol=1e-6)


def test_gradients_true_vs_bpda(three_class) -> None:
    model, x, y = three_class
    for transform in (BitDepth(3), JPEG(50)):
        xg = x[:8].clone().requires_grad_(True)
        torch.nn.functional.cross_entropy(Preprocessed(model, transform)(xg), y[:8]).backward()
        assert float(xg.grad.abs().sum()) == 0.0  # piecewise constant: a.e. zero gradient
        xb = x[:8].clone().requires_grad_(True)
        bpda = Preprocessed(model, transform, bpda=True)
        torch.nn.functional.cross_entropy(bpda(xb), y[:8]).backward()
        assert float(xb.grad.abs().sum()) > 0.0
    z = torch.rand(2, 1, 4, 4, requires_grad=True)
    straight_through(z, BitDepth(2)).sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))  # identity on the backward pass


def test_eot_of_a_deterministic_model_is_its_log_softmax(three_class) -> None:
    model, x, _ = three_class
    with torch.no_grad():
        assert torch.allclose(EOT(model, 4)(x[:5]), model(x[:5]).log_softmax(1), atol=1e-5)
        noisy = EOT(Preprocessed(model, GaussianNoise(0.1)), 3)(x[:5])
    assert noisy.shape == (5, 3) and torch.allclose(noisy.exp().sum(1), torch.ones(5))


@pytest.mark.parametrize("transform", [BitDepth(3), JPEG(50)], ids=["bit_depth", "jpeg"])
def test_bpda_collapses_a_masking_transform_and_flags_it(three_class, transform) -> None:
    model, x, y = three_class
    x, y = x[:40], y[:40]
    result = evaluate_defense(transform_defense(model, transform), x, y, FAST, seed=0)
    m = result.metrics
    assert m["clean_acc"] >= 0.9
    assert m["robust_acc_pgd"] >= 0.8  # looks strong: plain PGD sees zero gradients
    assert m["robust_acc_bpda_pgd"] <= m["robust_acc_pgd"] - 0.3  # BPDA collapses it
    assert m["robust_acc"] == min(m["robust_acc_pgd"], m["robust_acc_square"],
                                  m["robust_acc_bpda_pgd"])
    assert result.flags["zero_gradients"] and m["zero_grad_fraction"] == 1.0
    assert result.flagged and m["gradient_masking_flagged"] == 1.0


def test_undefended_model_trips_no_flag(three_class) -> None:
    from medsec.defenses.build import undefended

    model, x, y = three_class
    result = evaluate_defense(undefended(model), x, y, FAST, seed=0, baseline=model)
    assert not result.flagged, result.flags
    assert result.metrics["robust_acc"] < result.metrics["clean_acc"]
    assert result.costs["inference_overhead"] > 0
    assert not any("seconds" in k or "overhead" in k for k in result.metrics)
