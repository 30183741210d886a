"""Projected Gradient Descent (Madry et al. 2018), linf and l2, random start and restarts."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medsec.attacks.base import (
    Attack,
    LossFn,
    check_epsilon,
    check_positive,
    per_example,
    random_init,
)


class PGD(Attack):
    """Iterated projected steepest ascent on ``loss_fn`` inside the eps ball.

    Each restart starts at a random point of the ball (``random_start``) or at the image and
    runs ``steps`` steps of size ``alpha``. With ``early_stop`` (default) an example stops at
    the first iterate that is adversarial - no more gradient passes are spent on it, and the
    attack can only get stronger than returning the final iterate; with ``early_stop=False``
    every example returns its final iterate (Madry et al.; ART's behaviour). Restarts run on
    the examples not yet fooled; each example keeps the iterate with the lowest
    :meth:`adversarial_margin`.

    Args:
        model: pixel-space classifier returning logits (N, K).
        eps: budget in pixel units. alpha: step size in the same units.
        steps: iterations per restart. norm: ``"linf"`` or ``"l2"``.
        random_start: start uniformly inside the ball. restarts: number of runs (>= 1).
        early_stop: freeze examples once adversarial.
        targeted: labels are targets. seed: seed of the random starts.
        loss_fn: per-example loss, default cross-entropy.
    """

    name = "pgd"
    supports_targeted = True
    supports_multilabel = True
    needs_clean_logits = False  # the first gradient pass validates the model output

    def __init__(self, model: nn.Module, eps: float = 8 / 255, alpha: float = 2 / 255,
                 steps: int = 10, norm: str = "linf", random_start: bool = True, restarts: int = 1,
                 early_stop: bool = True, targeted: bool = False, seed: int = 0,
                 loss_fn: LossFn | None = None) -> None:
        super().__init__(model, eps=eps, norm=norm, targeted=targeted, seed=seed, loss_fn=loss_fn)
        self.alpha = check_epsilon("alpha", alpha, norm)
        self.steps = check_positive("steps", steps, integer=True)
        self.random_start = bool(random_start)
        self.restarts = check_positive("restarts", restarts, integer=True)
        self.early_stop = bool(early_stop)

    # hooks for variants (MIM) -------------------------------------------------------

    def _init_state(self, images: Tensor) -> dict[str, Tensor]:
        """Per-run state carried between steps (e.g. a momentum buffer), rows = examples."""
        return {}

    def _direction(self, grad: Tensor, state: dict[str, Tensor], rows: Tensor | None) -> Tensor:
        """Turn the raw gradient of the examples ``rows`` (None: all) into the ascent
        direction (identity for PGD)."""
        return grad

    # -------------------------------------------------------------------------------

    def _run(self, images: Tensor, labels: Tensor, index: Tensor | None) -> Tensor:
        """One restart on ``images`` (global example ids ``index``, None = all)."""
        assert self.eps is not None
        x_adv = (
            random_init(images, self.eps, self.norm, self.generator)
            if self.random_start
            else images.clone()
        )
        state = self._init_state(images)
        rows: Tensor | None = None  # the examples still attacked (None: all of them)
        for _ in range(self.steps):
            x, y, xa = (
                (images, labels, x_adv)
                if rows is None
                else (images[rows], labels[rows], x_adv[rows])
            )
            ids = rows if index is None else (index if rows is None else index[rows])
            grad, _, logits = self._gradient(xa, y, ids)
            stepped = self._ascent_step(xa, x, self._direction(grad, state, rows), self.alpha)
            self._iterations += 1
            if not self.early_stop:
                x_adv = stepped
                continue
            done = self.is_adversarial(logits, y)
            stepped = torch.where(per_example(done, x), xa, stepped)
            if rows is None:
                x_adv = stepped
            else:
                x_adv[rows] = stepped
            if bool(done.any()):
                rows = (~done).nonzero().squeeze(1) if rows is None else rows[~done]
                if rows.numel() == 0:
                    break
        return x_adv

    def _perturb(self, images: Tensor, labels: Tensor, clean_logits: Tensor | None) -> Tensor:
        best = self._run(images, labels, None)
        if self.restarts == 1:
            return best
        margin = self.adversarial_margin(self._forward(best), labels)
        for _ in range(self.restarts - 1):
            todo = (margin >= 0).nonzero().squeeze(1) if self.early_stop else None
            if todo is not None and todo.numel() == 0:
                break
            x, y = (images, labels) if todo is None else (images[todo], labels[todo])
            x_adv = self._run(x, y, todo)
            new_margin = self.adversarial_margin(self._forward(x_adv, todo), y)
            old, prev = (margin, best) if todo is None else (margin[todo], best[todo])
            merged = torch.where(per_example(new_margin < old, x), x_adv, prev)
            if todo is None:
                best, margin = merged, torch.minimum(new_margin, margin)
            else:
                best[todo], margin[todo] = merged, torch.minimum(new_margin, old)
        return best
