"""Accountant reference values, Opacus vs dp_accounting, noise calibration for a target."""

from __future__ import annotations

import math

import pytest

from medsec.privacy.accounting import (
    UnreachableEpsilonError,
    epsilon_for,
    epsilon_reference,
    noise_for_target,
)

# (N, batch, sigma, epochs, delta, expected RDP epsilon). The first two are TF Privacy's test
# values; the third uses today's RDP -> (eps, delta) conversion (the old README said 3.01).
REFERENCE = [
    (60_000, 150, 1.3, 15, 1e-5, 0.7242),
    (100_000, 100, 1.0, 30, 1e-7, 1.4155),
    (60_000, 256, 1.1, 60, 1e-5, 2.597),
]


def _mechanism(n: int, batch: int, epochs: int) -> tuple[float, int]:
    return batch / n, int(epochs * n / batch)


@pytest.mark.parametrize(("n", "batch", "sigma", "epochs", "delta", "expected"), REFERENCE)
def test_rdp_reference_values(n, batch, sigma, epochs, delta, expected):
    q, steps = _mechanism(n, batch, epochs)
    assert epsilon_for(sigma, q, steps, delta, "rdp") == pytest.approx(expected, rel=1e-3)


@pytest.mark.parametrize(("n", "batch", "sigma", "epochs", "delta", "expected"), REFERENCE)
def test_opacus_rdp_matches_dp_accounting(n, batch, sigma, epochs, delta, expected):
    q, steps = _mechanism(n, batch, epochs)
    ours = epsilon_for(sigma, q, steps, delta, "rdp")
    assert ours == pytest.approx(epsilon_reference(sigma, q, steps, delta, "rdp"), rel=1e-4)


def test_prv_is_tight_against_dp_accounting_pld():
    # Both are numerically tight accountants; PRV reports an upper bound (eps_error 0.01).
    q, steps = _mechanism(60_000, 150, 15)
    prv = epsilon_for(1.3, q, steps, 1e-5, "prv")
    pld = epsilon_reference(1.3, q, steps, 1e-5, "pld")
    rdp = epsilon_for(1.3, q, steps, 1e-5, "rdp")
    assert pld - 0.01 <= prv <= pld * 1.03
    assert prv < rdp  # RDP's conversion is loose


def test_epsilon_grows_with_steps_and_falls_with_noise():
    base = epsilon_for(1.0, 0.01, 1000, 1e-5, "rdp")
    assert epsilon_for(1.0, 0.01, 2000, 1e-5, "rdp") > base
    assert epsilon_for(2.0, 0.01, 1000, 1e-5, "rdp") < base


@pytest.mark.parametrize("accountant", ["rdp", "gdp"])
def test_noise_for_target_meets_the_target_tightly(accountant):
    sigma = noise_for_target(1.0, 0.01, 1000, 1e-5, accountant)
    eps = epsilon_for(sigma, 0.01, 1000, 1e-5, accountant)
    assert 0.95 <= eps <= 1.0
    # 1 % less noise would overshoot the target: sigma is (near) the smallest admissible.
    assert epsilon_for(sigma / 1.02, 0.01, 1000, 1e-5, accountant) > 1.0


def test_unreachable_target_raises_clear_error():
    with pytest.raises(UnreachableEpsilonError, match="unreachable.*noise_multiplier=50"):
        noise_for_target(0.01, 0.5, 20, 1e-5, "rdp")
    assert issubclass(UnreachableEpsilonError, ValueError)


def test_loose_target_returns_the_noise_floor():
    assert noise_for_target(1e4, 0.25, 8, 1e-5, "rdp") == pytest.approx(0.3)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"noise_multiplier": 0.0}, "noise_multiplier"),
        ({"sample_rate": 1.5}, "sample_rate"),
        ({"steps": 0}, "steps"),
        ({"delta": 1.0}, "delta"),
        ({"accountant": "moments"}, "accountant"),
    ],
)
def test_epsilon_for_validates_inputs(kwargs, field):
    args = {
        "noise_multiplier": 1.0,
        "sample_rate": 0.01,
        "steps": 10,
        "delta": 1e-5,
        "accountant": "rdp",
        **kwargs,
    }
    with pytest.raises(ValueError, match=field):
        epsilon_for(**args)


def test_prv_refuses_tiny_noise_instead_of_exhausting_memory():
    with pytest.raises(ValueError, match="rdp"):
        epsilon_for(0.05, 0.01, 1000, 1e-5, "prv")
    assert math.isfinite(epsilon_for(0.05, 0.01, 10, 1e-5, "rdp"))
