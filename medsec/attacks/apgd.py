"""Auto-PGD (Croce & Hein 2020): step-size-free PGD with momentum and checkpoints."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from medsec.attacks.base import (
    Attack,
    LossFn,
    check_positive,
    clip_to_ball,
    cross_entropy_loss,
    margin_loss,
    normalize,
    per_example,
)

LOSSES: dict[str, LossFn] = {"ce": cross_entropy_loss, "margin": margin_loss}


def checkpoints(steps: int) -> list[int]:
    """APGD checkpoints ``w_j = ceil(p_j * steps)`` with p_0 = 0, p_1 = 0.22,
    p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)."""
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({math.ceil(q * steps) for q in p if q <= 1})


class APGD(Attack):
    """APGD with the cross-entropy (``"ce"``) or CW margin (``"margin"``) loss.

    The margin loss replaces DLR so the attack also works on binary tasks. The step size
    starts at ``2 * eps`` and is halved at a checkpoint when fewer than ``rho`` of the steps
    since the last checkpoint improved the loss, or when neither step size nor best loss
    changed; the iterate then restarts from the best point. Returns, per example, the first
    adversarial iterate found or else the highest-loss point.

    Args:
        model: pixel-space classifier returning logits (N, K).
        eps: budget in pixel units. norm: ``"linf"`` or ``"l2"``.
        steps: iterations per restart. restarts: runs on the still-robust examples.
        loss: ``"ce"``, ``"margin"`` or a per-example callable ``(logits, labels) -> (N,)``.
        rho: success fraction below which the step is halved (0.75).
        targeted: labels are targets (the loss is minimised). seed: random starts.
    """

    name = "apgd"
    supports_targeted = True
    supports_multilabel = True

    def __init__(self, model: nn.Module, eps: float = 8 / 255, norm: str = "linf", steps: int = 100,
                 restarts: int = 1, loss: str | LossFn = "ce", rho: float = 0.75,
                 targeted: bool = False, seed: int = 0) -> None:
        if isinstance(loss, str) and loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)} or a callable, got {loss!r}")
        loss_fn = LOSSES[loss] if isinstance(loss, str) else loss
        super().__init__(model, eps=eps, norm=norm, targeted=targeted, seed=seed, loss_fn=loss_fn)
        self.loss = loss
        self.steps = check_positive("steps", steps, integer=True)
        self.restarts = check_positive("restarts", restarts, integer=True)
        self.rho = float(check_positive("rho", rho))

    def _start(self, x: Tensor) -> Tensor:
        assert self.eps is not None
        shape, g = x.shape, self.generator
        if self.norm == "linf":
            t = 2 * torch.rand(shape, generator=g, dtype=x.dtype, device=x.device) - 1
            t = t / per_example(t.flatten(1).abs().amax(1).clamp_min(1e-12), t)
        else:
            t = normalize(torch.randn(shape, generator=g, dtype=x.dtype, device=x.device), "l2")
        return (x + self.eps * t).clamp(0.0, 1.0)

    def _run(self, x: Tensor, y: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
        """One APGD run on a subset; returns (adversarial-or-best points, success mask)."""
        assert self.eps is not None
        marks = set(checkpoints(self.steps)[1:])
        x_adv = self._start(x)
        grad, loss, logits = self._gradient(x_adv, y, index)
        success = self.is_adversarial(logits, y)
        x_found = x_adv.clone()
        x_best, loss_best, grad_best = x_adv.clone(), loss.clone(), grad.clone()
        step = torch.full((x.shape[0],), 2.0 * self.eps, dtype=x.dtype, device=x.device)
        x_prev, loss_prev = x_adv.clone(), loss
        n_improved = torch.zeros_like(loss)
        loss_best_last = loss_best.clone()
        reduced_last = torch.ones_like(success)
        last_mark = 0
        for i in range(self.steps):
            z = self._ascent_step(x_adv, x, grad, step)
            a = 0.75 if i > 0 else 1.0
            x_new = clip_to_ball(
                x_adv + a * (z - x_adv) + (1 - a) * (x_adv - x_prev), x, self.eps, self.norm
            )
            x_prev, x_adv = x_adv, x_new
            grad, loss, logits = self._gradient(x_adv, y, index)
            self._iterations += 1

            fooled = self.is_adversarial(logits, y) & ~success
            x_found[fooled] = x_adv[fooled]
            success |= fooled
            n_improved += (loss > loss_prev).to(loss.dtype)  # consecutive increases
            loss_prev = loss
            better = loss > loss_best
            x_best[better], grad_best[better], loss_best[better] = (
                x_adv[better],
                grad[better],
                loss[better],
            )
            if i + 1 in marks:
                window = i + 1 - last_mark
                oscillating = n_improved <= self.rho * window
                stalled = ~reduced_last & (loss_best_last >= loss_best)
                reduce = oscillating | stalled
                step = torch.where(reduce, step / 2, step)
                x_adv = torch.where(per_example(reduce, x), x_best, x_adv)
                grad = torch.where(per_example(reduce, x), grad_best, grad)
                reduced_last, loss_best_last = reduce, loss_best.clone()
                n_improved.zero_()
                last_mark = i + 1
        return torch.where(per_example(success, x), x_found, x_best), success

    def _perturb(self, images: Tensor, labels: Tensor, clean_logits: Tensor | None) -> Tensor:
        assert clean_logits is not None
        adv = images.clone()
        robust = ~self.is_adversarial(clean_logits, labels)
        for _ in range(self.restarts):
            index = robust.nonzero().squeeze(1)
            if index.numel() == 0:
                break
            x_run, ok = self._run(images[index], labels[index], index)
            adv[index] = x_run
            robust[index[ok]] = False
        return adv
