"""DeepFool (Moosavi-Dezfooli et al. 2016), batched over examples and candidate classes."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medsec.attacks.base import Attack, check_epsilon, check_positive

_TOL = 1e-7


class DeepFool(Attack):
    """Minimal-norm attack by iterated linearisation of the decision boundaries.

    At each step, for every still-correct example, the logit differences ``f_k - f_y`` of the
    ``candidates`` most likely other classes (ranked on the clean image) and their input
    gradients come from one forward pass and one backward pass per candidate (one in total for
    binary tasks); the step goes to the nearest linearised boundary. Only examples not yet
    fooled are recomputed. The accumulated step is scaled by ``1 + overshoot``.

    Args:
        model: pixel-space classifier returning logits (N, K).
        steps: maximum iterations. overshoot: boundary overshoot (0.02).
        candidates: number of other classes considered (top-k of the clean logits).
        norm: ``"l2"`` (classic) or ``"linf"`` (dual l1 distances, sign steps).
        eps: optional budget; perturbations beyond it are projected onto the ball.
        seed: unused (deterministic).
    """

    name = "deepfool"

    def __init__(self, model: nn.Module, steps: int = 50, overshoot: float = 0.02,
                 candidates: int = 10, norm: str = "l2", eps: float | None = None,
                 seed: int = 0) -> None:
        super().__init__(model, eps=eps, norm=norm, seed=seed)
        self.steps = check_positive("steps", steps, integer=True)
        self.overshoot = check_epsilon("overshoot", overshoot, "l2")
        self.candidates = check_positive("candidates", candidates, integer=True)

    def _step(self, f_diff: Tensor, grads: Tensor) -> Tensor:
        """Step to the nearest linearised boundary. f_diff (n, m), grads (n, m, D) -> (n, D)."""
        rows = torch.arange(f_diff.shape[0], device=f_diff.device)
        if self.norm == "l2":
            w_norm = grads.norm(dim=2)
        else:
            w_norm = grads.abs().sum(dim=2)
        nearest = (f_diff.abs() / (w_norm + _TOL)).argmin(dim=1)
        w, f = grads[rows, nearest], f_diff[rows, nearest].abs()
        if self.norm == "l2":
            return ((f + _TOL) / (w.pow(2).sum(1) + _TOL))[:, None] * w
        return ((f + _TOL) / (w.abs().sum(1) + _TOL))[:, None] * w.sign()

    def _perturb(self, images: Tensor, labels: Tensor, clean_logits: Tensor | None) -> Tensor:
        assert clean_logits is not None
        n = images.shape[0]
        flat = images.reshape(n, -1)
        m = min(self.candidates, self.num_classes - 1)
        others = clean_logits.scatter(1, labels[:, None], float("-inf"))
        cand = others.topk(m, dim=1).indices  # (N, m)
        r_tot = torch.zeros_like(flat)
        active = ~self.is_adversarial(clean_logits, labels)
        scale = 1.0 + self.overshoot
        for _ in range(self.steps):
            idx = active.nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            x_a = (flat[idx] + scale * r_tot[idx]).clamp(0.0, 1.0).requires_grad_(True)
            logits = self.model(x_a.view(-1, *images.shape[1:]))
            self._count(idx)
            fooled = self.is_adversarial(logits.detach(), labels[idx])
            f_diff = logits.gather(1, cand[idx]) - logits.gather(1, labels[idx, None])
            grads = torch.stack(
                [
                    torch.autograd.grad(f_diff[:, j].sum(), x_a, retain_graph=j < m - 1)[0]
                    for j in range(m)
                ],
                dim=1,
            )
            step = self._step(f_diff.detach(), grads)
            keep = ~fooled
            r_tot[idx[keep]] += step[keep]
            active[idx[fooled]] = False
            self._iterations += 1
        adv = (flat + scale * r_tot).clamp(0.0, 1.0).view_as(images)
        if self.eps is not None:
            adv = self._project_budget(adv, images)
        return adv
