"""One-pixel / few-pixel attack (Su et al. 2019) by differential evolution."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medsec.attacks.base import Attack, check_positive


class OnePixel(Attack):
    """Change at most ``pixels`` pixel locations (all channels of each) to fool the model.

    A candidate is ``pixels`` rows of ``(row, col, value_1..value_C)``; DE/rand/1 with
    binomial crossover evolves ``population`` candidates per example, all examples and all
    candidates evaluated in the same forward passes (chunks of ``batch_size`` images). The
    fitness is :meth:`adversarial_margin`; an example stops once its best candidate is
    adversarial. Black-box: only model outputs are used.

    Args:
        model: pixel-space classifier returning logits (N, K).
        pixels: L0 budget in pixel locations. population: candidates per example.
        steps: generations. mutation: DE weight F. crossover: DE crossover rate
            (1.0 = pure mutant, as in the paper).
        batch_size: maximum images per forward pass.
        targeted: labels are targets. seed: seed of the evolution.
    """

    name = "one_pixel"
    norms = ("l0",)
    supports_targeted = True
    spatial_dims = (2,)

    def __init__(self, model: nn.Module, pixels: int = 1, population: int = 40, steps: int = 20,
                 mutation: float = 0.5, crossover: float = 1.0, batch_size: int = 4096,
                 targeted: bool = False, seed: int = 0) -> None:
        super().__init__(model, eps=None, norm="l0", targeted=targeted, seed=seed)
        self.pixels = check_positive("pixels", pixels, integer=True)
        self.population = check_positive("population", population, integer=True)
        if self.population < 4:
            raise ValueError(f"population must be >= 4 for DE/rand/1, got {population}")
        self.steps = check_positive("steps", steps, integer=True, allow_zero=True)
        self.mutation = float(check_positive("mutation", mutation))
        self.crossover = float(check_positive("crossover", crossover))
        if self.crossover > 1:
            raise ValueError(f"crossover must lie in (0, 1], got {crossover}")
        self.batch_size = check_positive("batch_size", batch_size, integer=True)

    def _clip(self, cand: Tensor, h: int, w: int) -> Tensor:
        cand[..., 0].clamp_(0, h - 1)
        cand[..., 1].clamp_(0, w - 1)
        cand[..., 2:].clamp_(0.0, 1.0)
        return cand

    def _apply(self, x: Tensor, cand: Tensor) -> Tensor:
        """x (n, C, H, W), cand (n, P, k, 2 + C) -> images (n * P, C, H, W)."""
        n, c, h, w = x.shape
        p, k = cand.shape[1], cand.shape[2]
        images = x[:, None].expand(n, p, c, h, w).reshape(n * p, c, h * w).clone()
        pos = cand[..., 0].round().long() * w + cand[..., 1].round().long()
        pos = pos.reshape(n * p, 1, k).expand(-1, c, -1)
        values = cand[..., 2:].reshape(n * p, k, c).transpose(1, 2)
        return images.scatter_(2, pos, values).view(n * p, c, h, w)

    def _fitness(self, x: Tensor, y: Tensor, cand: Tensor, index: Tensor) -> Tensor:
        """Margins (n, P) of all candidates; counts P queries per example."""
        n, p = cand.shape[:2]
        images = self._apply(x, cand)
        with torch.no_grad():
            logits = torch.cat(
                [
                    self.model(images[i : i + self.batch_size])
                    for i in range(0, images.shape[0], self.batch_size)
                ]
            )
        self._queries.index_add_(0, index, torch.full_like(index, p))
        return self.adversarial_margin(logits, y.repeat_interleave(p)).view(n, p)

    def _perturb(self, images: Tensor, labels: Tensor, clean_logits: Tensor | None) -> Tensor:
        assert clean_logits is not None
        n, c, h, w = images.shape
        g, dev, dt = self.generator, images.device, images.dtype
        size = (n, self.population, self.pixels)
        pop = torch.cat(
            [
                torch.rand(*size, 1, generator=g, device=dev, dtype=dt) * (h - 1),
                torch.rand(*size, 1, generator=g, device=dev, dtype=dt) * (w - 1),
                torch.rand(*size, c, generator=g, device=dev, dtype=dt),
            ],
            dim=-1,
        )
        todo = (~self.is_adversarial(clean_logits, labels)).nonzero().squeeze(1)
        fit = torch.full((n, self.population), float("inf"), dtype=dt, device=dev)
        if todo.numel():
            fit[todo] = self._fitness(images[todo], labels[todo], pop[todo], todo)
        active = torch.zeros(n, dtype=torch.bool, device=dev)
        active[todo] = fit[todo].amin(1) >= 0
        p = self.population
        eye = torch.eye(p, dtype=torch.bool, device=dev)
        for _ in range(self.steps):
            idx = active.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            m = idx.numel()
            keys = torch.rand(m, p, p, generator=g, device=dev).masked_fill(eye, 2.0)
            abc = keys.argsort(dim=-1)[..., :3]  # three distinct donors != self
            sub = pop[idx]
            donors = [sub[torch.arange(m, device=dev)[:, None], abc[..., j]] for j in range(3)]
            trial = self._clip(donors[0] + self.mutation * (donors[1] - donors[2]), h, w)
            if self.crossover < 1:
                cross = torch.rand(trial.shape, generator=g, device=dev) < self.crossover
                trial = torch.where(cross, trial, sub)
            trial_fit = self._fitness(images[idx], labels[idx], trial, idx)
            better = trial_fit < fit[idx]
            pop[idx] = torch.where(better[..., None, None], trial, sub)
            fit[idx] = torch.where(better, trial_fit, fit[idx])
            active[idx] = fit[idx].amin(1) >= 0
            self._iterations += 1
        best = fit.argmin(dim=1)
        chosen = pop[torch.arange(n, device=dev), best][:, None]  # (n, 1, k, 2 + C)
        adv = self._apply(images, chosen)
        untouched = ~torch.isfinite(fit).all(dim=1)  # clean already adversarial
        adv[untouched] = images[untouched]
        return adv
