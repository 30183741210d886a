"""Privacy accounting for DP-SGD: epsilon from noise, noise from a target epsilon.

DP-SGD with Poisson sampling at rate ``q`` and Gaussian noise ``sigma * C`` (``C`` the clipping
norm) composed over ``steps`` optimizer steps. Accountants (all from Opacus):

- ``"prv"``: privacy random variables (Gopi et al. 2021), tight; an upper bound within
  ``eps_error`` (0.01) of the true epsilon. Opacus' default.
- ``"rdp"``: Renyi DP (Mironov 2017) with the modern RDP -> (eps, delta) conversion; loose but
  the classic reference (TF Privacy numbers).
- ``"gdp"``: Gaussian DP via the CLT (Bu et al. 2020); can *underestimate* epsilon.

:func:`epsilon_reference` recomputes epsilon independently with Google's ``dp_accounting``.
Opacus is imported on first use: :mod:`medsec.privacy.config` imports this module's names.
"""

from __future__ import annotations

import math
import warnings
from typing import Literal, get_args

Accountant = Literal["prv", "rdp", "gdp"]
ACCOUNTANTS: tuple[str, ...] = get_args(Accountant)

# PRV's discretisation grows with 1/sigma: below this it can take seconds and tens of GiB.
PRV_MIN_NOISE_MULTIPLIER = 0.2
# Search bounds of :func:`noise_for_target`: below the floor training is barely private at all,
# above the ceiling the model learns nothing; a target outside them is "unreachable".
MIN_NOISE_MULTIPLIER = 0.3
MAX_NOISE_MULTIPLIER = 50.0


class UnreachableEpsilonError(ValueError):
    """The target epsilon cannot be met with the given sampling, steps and delta."""


def check_prv_noise(noise_multiplier: float, accountant: str) -> None:
    """Raise ValueError when ``accountant`` is PRV and ``noise_multiplier`` is below
    :data:`PRV_MIN_NOISE_MULTIPLIER` (the one check: the config and :func:`epsilon_for`)."""
    if accountant == "prv" and noise_multiplier < PRV_MIN_NOISE_MULTIPLIER:
        raise ValueError(
            f"noise_multiplier={noise_multiplier} is below {PRV_MIN_NOISE_MULTIPLIER}, where the "
            "PRV accountant runs out of memory; use accountant='rdp'"
        )


def _check_mechanism(noise_multiplier: float, sample_rate: float, steps: int,
                     delta: float) -> None:
    if not noise_multiplier > 0:
        raise ValueError(f"noise_multiplier must be > 0, got {noise_multiplier}")
    if not 0 < sample_rate <= 1:
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")


def epsilon_for(noise_multiplier: float, sample_rate: float, steps: int, delta: float,
                accountant: Accountant = "prv") -> float:
    """Epsilon of ``steps`` Poisson-sampled Gaussian steps (Opacus accountant ``accountant``).

    ``sample_rate`` = expected batch size / N (Opacus uses 1 / batches per epoch).
    """
    from opacus.accountants import create_accountant

    if accountant not in ACCOUNTANTS:
        raise ValueError(f"accountant must be one of {ACCOUNTANTS}, got {accountant!r}")
    _check_mechanism(noise_multiplier, sample_rate, steps, delta)
    check_prv_noise(noise_multiplier, accountant)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # gdp warns on every construction (see docstring)
            acc = create_accountant(mechanism=accountant)
            acc.history = [(float(noise_multiplier), float(sample_rate), int(steps))]
            eps = float(acc.get_epsilon(delta=delta))
    except (ValueError, ArithmeticError) as exc:
        raise ValueError(
            f"accountant {accountant!r} failed for noise_multiplier={noise_multiplier}, "
            f"sample_rate={sample_rate}, steps={steps}, delta={delta}: {exc}"
        ) from exc
    return eps


def epsilon_reference(noise_multiplier: float, sample_rate: float, steps: int, delta: float,
                      method: Literal["rdp", "pld"] = "rdp") -> float:
    """Independent recomputation with Google's ``dp_accounting`` (not Opacus).

    ``PoissonSampledDpEvent(q, GaussianDpEvent(sigma))`` self-composed ``steps`` times, with the
    RDP accountant or the (tight) privacy-loss-distribution accountant.
    """
    import dp_accounting
    from dp_accounting import pld, rdp

    _check_mechanism(noise_multiplier, sample_rate, steps, delta)
    event = dp_accounting.PoissonSampledDpEvent(
        sample_rate, dp_accounting.GaussianDpEvent(noise_multiplier)
    )
    if method == "rdp":
        acc = rdp.RdpAccountant()
    elif method == "pld":
        acc = pld.PLDAccountant()
    else:
        raise ValueError(f"method must be 'rdp' or 'pld', got {method!r}")
    acc.compose(event, steps)
    return float(acc.get_epsilon(delta))


def noise_for_target(target_epsilon: float, sample_rate: float, steps: int, delta: float,
                     accountant: Accountant = "prv", *,
                     min_noise_multiplier: float = MIN_NOISE_MULTIPLIER,
                     max_noise_multiplier: float = MAX_NOISE_MULTIPLIER,
                     rel_tol: float = 0.01) -> float:
    """Smallest noise multiplier (to ``rel_tol``) whose epsilon is <= ``target_epsilon``.

    Bisection on ``[min_noise_multiplier, max_noise_multiplier]``; the returned sigma always
    satisfies the target. A loose target that is met already at the floor returns the floor.
    Raises :class:`UnreachableEpsilonError` (a ValueError) when even the ceiling misses the
    target, instead of Opacus' obscure errors or sigmas in the thousands.
    """
    if not target_epsilon > 0:
        raise ValueError(f"target_epsilon must be > 0, got {target_epsilon}")
    if not 0 < min_noise_multiplier < max_noise_multiplier:
        raise ValueError("need 0 < min_noise_multiplier < max_noise_multiplier")

    def eps(sigma: float) -> float:
        try:
            return epsilon_for(sigma, sample_rate, steps, delta, accountant)
        except ValueError:  # e.g. gdp cannot represent epsilon > 500: far above any target
            return math.inf

    eps_high = epsilon_for(max_noise_multiplier, sample_rate, steps, delta, accountant)
    if eps_high > target_epsilon:
        raise UnreachableEpsilonError(
            f"target_epsilon={target_epsilon} is unreachable with {steps} steps at sample_rate="
            f"{sample_rate:.4g} and delta={delta:.3g} ({accountant}): even noise_multiplier="
            f"{max_noise_multiplier} gives epsilon={eps_high:.4g}. Train fewer epochs, use a "
            f"smaller batch, or raise the target."
        )
    lo, hi = min_noise_multiplier, max_noise_multiplier
    if eps(lo) <= target_epsilon:
        return lo
    # Epsilon falls monotonically with sigma; bisect in log space (sigma spans decades).
    while hi / lo > 1 + rel_tol:
        mid = math.sqrt(lo * hi)
        if eps(mid) <= target_epsilon:
            hi = mid
        else:
            lo = mid
    return hi
