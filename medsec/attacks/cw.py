"""Carlini & Wagner L2 attack (2017): tanh-space Adam with a binary search over c."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medsec.attacks.base import Attack, check_epsilon, check_positive


class CWL2(Attack):
    """Minimise ``||x' - x||_2^2 + c * max(margin + kappa, 0)`` over ``x' = (tanh(w) + 1) / 2``.

    Each example has its own constant ``c``: it is divided towards the smallest successful
    value after a success and multiplied by 10 (or bisected) after a failure. Returns the
    smallest-L2 adversarial found per example and the clean image where none was found.

    Args:
        model: pixel-space classifier returning logits (N, K).
        c: initial constant. kappa: confidence margin (>= 0).
        steps: Adam steps per search step. binary_search_steps: number of searches.
        lr: Adam learning rate (in tanh space). abort_early: stop a search step when the total
            loss stalls (checked every ``steps // 10`` steps).
        eps: optional L2 cap; adversarials above it are scaled back onto the ball.
        targeted: labels are targets. seed: unused (deterministic).
    """

    name = "cw"
    norms = ("l2",)
    supports_targeted = True

    def __init__(self, model: nn.Module, c: float = 1.0, kappa: float = 0.0, steps: int = 100,
                 binary_search_steps: int = 5, lr: float = 0.01, abort_early: bool = True,
                 eps: float | None = None, targeted: bool = False, seed: int = 0) -> None:
        super().__init__(model, eps=eps, norm="l2", targeted=targeted, seed=seed)
        self.c = float(check_positive("c", c))
        self.kappa = check_epsilon("kappa", kappa, "l2")
        self.steps = check_positive("steps", steps, integer=True)
        self.binary_search_steps = check_positive(
            "binary_search_steps", binary_search_steps, integer=True
        )
        self.lr = float(check_positive("lr", lr))
        self.abort_early = bool(abort_early)

    def _hinge(self, logits: Tensor, labels: Tensor) -> Tensor:
        """(N,) CW objective ``max(margin + kappa, 0)``: zero once adversarial by kappa."""
        return (self.adversarial_margin(logits, labels) + self.kappa).clamp_min(0.0)

    def _perturb(self, images: Tensor, labels: Tensor, clean_logits: Tensor | None) -> Tensor:
        n = images.shape[0]
        w0 = torch.atanh((images * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6))
        const = torch.full((n,), self.c, dtype=images.dtype, device=images.device)
        lower, upper = torch.zeros_like(const), torch.full_like(const, 1e10)
        best_l2 = torch.full_like(const, float("inf"))
        best_adv = images.clone()
        check_every = max(self.steps // 10, 1)
        for _ in range(self.binary_search_steps):
            w = w0.clone().requires_grad_(True)
            opt = torch.optim.Adam([w], lr=self.lr)
            found = torch.zeros(n, dtype=torch.bool, device=images.device)
            prev = float("inf")
            for step in range(self.steps):
                x_adv = (torch.tanh(w) + 1) / 2
                logits = self.model(x_adv)
                l2sq = (x_adv - images).flatten(1).pow(2).sum(1)
                total = (l2sq + const * self._hinge(logits, labels)).sum()
                opt.zero_grad()
                total.backward()
                opt.step()
                self._count(None)
                self._iterations += 1
                with torch.no_grad():
                    ok = self.is_adversarial(logits, labels)
                    if self.kappa > 0:
                        ok &= self.adversarial_margin(logits, labels) <= -self.kappa
                    improved = ok & (l2sq < best_l2)
                    best_l2 = torch.where(improved, l2sq, best_l2)
                    best_adv[improved] = x_adv.detach()[improved]
                    found |= ok
                if self.abort_early and (step + 1) % check_every == 0:
                    if total.item() > prev * 0.9999:
                        break
                    prev = total.item()
            # binary search on c, per example
            upper = torch.where(found, torch.minimum(upper, const), upper)
            lower = torch.where(found, lower, torch.maximum(lower, const))
            bisect = (lower + upper) / 2
            const = torch.where(found | (upper < 1e9), bisect, const * 10)
        return self._project_budget(best_adv, images) if self.eps is not None else best_adv
