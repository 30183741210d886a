"""Randomized smoothing (Cohen, Rosenfeld & Kolter 2019): certified L2 robustness.

The smoothed classifier ``g(x) = argmax_c P(f(x + N(0, sigma^2 I)) = c)``. CERTIFY draws
``n0`` noisy copies to guess the top class ``cA``, then ``n`` more to bound
``pA >= pA_lower`` with the one-sided Clopper-Pearson bound at level ``1 - alpha``; if
``pA_lower > 1/2`` the prediction ``cA`` is certified within the L2 radius
``sigma * Phi^-1(pA_lower)``, else it abstains. Certified accuracy at radius r = fraction of
examples certified correct with a radius >= r (abstentions count as wrong).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import beta, norm
from torch import Tensor, nn

from medsec.attacks.base import model_guard

ABSTAIN = -1


def clopper_pearson_lower(successes: int, trials: int, alpha: float) -> float:
    """One-sided ``1 - alpha`` lower confidence bound on a binomial proportion."""
    if not 0 <= successes <= trials or trials < 1:
        raise ValueError(f"need 0 <= successes <= trials, trials >= 1; got {successes}/{trials}")
    if successes == 0:
        return 0.0
    return float(beta.ppf(alpha, successes, trials - successes + 1))


def certified_radius(p_lower: float, sigma: float) -> float:
    """``sigma * Phi^-1(p_lower)`` for ``p_lower > 1/2``; ``-inf`` otherwise (abstain)."""
    return float(sigma * norm.ppf(p_lower)) if p_lower > 0.5 else float("-inf")


@dataclass
class Certificate:
    """Per-example results: ``prediction`` (N,) with :data:`ABSTAIN` = -1, ``radius`` (N,)
    (-inf when abstaining) and the lower bound ``p_lower`` (N,)."""

    prediction: Tensor
    radius: Tensor
    p_lower: Tensor


class RandomizedSmoothing:
    """Smooth ``base`` (images in [0, 1] -> logits (N, K)) with Gaussian noise ``sigma``.

    ``n0``, ``n``, ``alpha`` are CERTIFY's defaults; noise comes from a generator seeded with
    ``seed`` at every :meth:`certify` call, so the same inputs give the same certificates.
    """

    def __init__(
        self, base: nn.Module, num_classes: int, sigma: float, n0: int = 16, n: int = 100,
        alpha: float = 0.001, batch: int = 256, seed: int = 0,
    ) -> None:
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        if n0 < 1 or n < 1 or not 0 < alpha < 1:
            raise ValueError(f"need n0 >= 1, n >= 1, 0 < alpha < 1; got {n0}, {n}, {alpha}")
        self.base, self.num_classes, self.sigma = base, num_classes, float(sigma)
        self.n0, self.n, self.alpha, self.batch, self.seed = n0, n, alpha, batch, seed

    def _counts(self, x: Tensor, num: int, batch: int, gen: torch.Generator) -> Tensor:
        """Class counts (K,) of ``num`` noisy copies of one image ``x`` (C, H, W)."""
        counts = torch.zeros(self.num_classes, dtype=torch.long)
        remaining = num
        while remaining > 0:
            size = min(batch, remaining)
            noise = torch.randn((size, *x.shape), generator=gen) * self.sigma
            pred = self.base(x.unsqueeze(0) + noise).argmax(1)
            counts += torch.bincount(pred, minlength=self.num_classes)
            remaining -= size
        return counts

    def certify(self, images: Tensor) -> Certificate:
        """CERTIFY of Cohen et al. for each image of ``images`` (N, C, H, W)."""
        n0, n, alpha, batch = self.n0, self.n, self.alpha, self.batch
        gen = torch.Generator().manual_seed(self.seed)
        preds, radii, lowers = [], [], []
        with model_guard(self.base), torch.no_grad():
            for x in images:
                guess = int(self._counts(x, n0, batch, gen).argmax())
                count = int(self._counts(x, n, batch, gen)[guess])
                p_lower = clopper_pearson_lower(count, n, alpha)
                radius = certified_radius(p_lower, self.sigma)
                preds.append(guess if np.isfinite(radius) else ABSTAIN)
                radii.append(radius)
                lowers.append(p_lower)
        return Certificate(torch.tensor(preds, dtype=torch.long),
                           torch.tensor(radii, dtype=torch.float64),
                           torch.tensor(lowers, dtype=torch.float64))


def certified_accuracy(cert: Certificate, labels: Tensor, radii: tuple[float, ...]) -> dict:
    """``certified_acc_at_r{r}`` for each radius, ``abstain_rate``, ``mean_certified_radius``
    (over correct, non-abstained examples; 0 when none)."""
    correct = cert.prediction == labels
    out = {f"certified_acc_at_r{r:g}": float((correct & (cert.radius >= r)).double().mean())
           for r in radii}
    out["abstain_rate"] = float((cert.prediction == ABSTAIN).double().mean())
    ok = cert.radius[correct]
    out["mean_certified_radius"] = float(ok.mean()) if ok.numel() else 0.0
    return out
