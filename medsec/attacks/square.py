"""Square attack (Andriushchenko et al. 2020): score-based random search, linf and l2.

Vectorised over examples: every still-robust example draws its own square window each
iteration (masks built by index arithmetic, no per-example Python loop), and each iteration
costs exactly one forward pass on the still-robust examples.
"""

from __future__ import annotations

import math
from functools import cache

import torch
from torch import Tensor, nn

from medsec.attacks.base import Attack, check_positive, lp_norm

_P_SCHEDULE = (
    (10, 1),
    (50, 2),
    (200, 4),
    (500, 8),
    (1000, 16),
    (2000, 32),
    (4000, 64),
    (6000, 128),
    (8000, 256),
    (10000, 512),
)


def p_selection(p_init: float, it: int, n_iters: int) -> float:
    """Fraction of pixels changed at iteration ``it`` (the paper's piecewise schedule)."""
    t = int(it / n_iters * 10000)
    if t <= 10:
        return p_init
    for bound, div in _P_SCHEDULE[1:]:
        if t <= bound:
            return p_init / div
    return p_init


def _pseudo_gaussian(rows: int, cols: int) -> Tensor:
    """Nested-rectangle bump of shape (rows, cols) with unit l2 norm."""
    delta = torch.zeros(rows, cols, dtype=torch.float64)
    r_c, c_c = rows // 2 + 1, cols // 2 + 1
    r0, c0 = r_c - 1, c_c - 1
    for k in range(max(r_c, c_c)):
        delta[max(r0, 0) : min(r0 + 2 * k + 1, rows), max(c0, 0) : min(c0 + 2 * k + 1, cols)] += (
            1.0 / (k + 1) ** 2
        )
        r0, c0 = r0 - 1, c0 - 1
    return delta / delta.norm()


@cache
def meta_pseudo_gaussian(s: int) -> Tensor:
    """(s, s) unit-norm pattern: a positive bump above a negative one (the paper's l2 window)."""
    delta = torch.zeros(s, s, dtype=torch.float64)
    delta[: s // 2] = _pseudo_gaussian(s // 2, s)
    delta[s // 2 :] = -_pseudo_gaussian(s - s // 2, s)
    return (delta / delta.norm()).float()


def _place(
    pattern: Tensor, top: Tensor, left: Tensor, h: int, w: int, transpose: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Paint an (s, s) pattern at per-example offsets; returns canvas and mask (n, 1, h, w)."""
    s = pattern.shape[0]
    rows = torch.arange(h, device=top.device)[None, :] - top[:, None]
    cols = torch.arange(w, device=top.device)[None, :] - left[:, None]
    mask = ((rows >= 0) & (rows < s))[:, :, None] & ((cols >= 0) & (cols < s))[:, None, :]
    r = rows.clamp(0, s - 1)[:, :, None]
    c = cols.clamp(0, s - 1)[:, None, :]
    index = r * s + c
    if transpose is not None:
        index = torch.where(transpose[:, None, None], c * s + r, index)
    canvas = pattern.to(top.device).flatten()[index] * mask
    return canvas[:, None], mask[:, None]


class Square(Attack):
    """Random search for a misclassifying perturbation on the eps-ball boundary.

    Minimises the margin :meth:`adversarial_margin` (``z_y - max_{j!=y} z_j``; for targeted,
    ``max_{j!=t} z_j - z_t``); a candidate replaces the current point only when it lowers the
    margin, and an example stops as soon as it is adversarial.

    Args:
        model: pixel-space classifier returning logits (N, K); only its outputs are used.
        eps: budget in pixel units. norm: ``"linf"`` or ``"l2"``.
        n_queries: maximum model queries per example, counting the clean evaluation.
        p_init: initial fraction of pixels per square (0.8 as in the paper; 0.05 is the
            paper's choice for linf on ImageNet-size images).
        targeted: labels are targets. seed: seed of the random search.

    ``last_stats.queries`` holds the queries used by each example.
    """

    name = "square"
    supports_targeted = True
    supports_multilabel = True
    spatial_dims = (2,)

    def __init__(self, model: nn.Module, eps: float = 8 / 255, norm: str = "linf",
                 n_queries: int = 1000, p_init: float = 0.8, targeted: bool = False,
                 seed: int = 0) -> None:
        super().__init__(model, eps=eps, norm=norm, targeted=targeted, seed=seed)
        self.n_queries = check_positive("n_queries", n_queries, integer=True)
        if self.n_queries < 2:
            raise ValueError(f"n_queries must be >= 2 (clean + one candidate), got {n_queries}")
        if not 0 < p_init < 1:
            raise ValueError(f"p_init must lie in (0, 1), got {p_init}")
        self.p_init = float(p_init)

    # ---------------------------------------------------------------- random helpers

    def _signs(self, *shape: int, like: Tensor) -> Tensor:
        bits = torch.randint(0, 2, shape, generator=self.generator, device=like.device)
        return (2 * bits - 1).to(like.dtype)

    def _offsets(self, n: int, limit: int, like: Tensor) -> Tensor:
        return torch.randint(0, limit, (n,), generator=self.generator, device=like.device)

    # ---------------------------------------------------------------- linf

    def _init_linf(self, x: Tensor) -> Tensor:
        assert self.eps is not None
        n, c, _, w = x.shape
        return (x + self.eps * self._signs(n, c, 1, w, like=x)).clamp(0.0, 1.0)

    def _candidate_linf(self, x: Tensor, x_best: Tensor, p: float) -> Tensor:
        assert self.eps is not None
        n, c, h, w = x.shape
        s = min(max(int(round(math.sqrt(p * h * w))), 1), min(h, w) - 1)
        top, left = self._offsets(n, h - s, x), self._offsets(n, w - s, x)
        _, mask = _place(torch.ones(s, s), top, left, h, w)
        values = self.eps * self._signs(n, c, 1, 1, like=x)
        for attempt in range(8):  # redraw windows that would not change the current point
            x_new = torch.where(mask, x + values, x_best).clamp(0.0, 1.0)
            same = ~(((x_new - x_best).abs() > 1e-7) & mask).flatten(1).any(1)
            if not bool(same.any()):
                break
            redraw = -values if attempt == 6 else self.eps * self._signs(n, c, 1, 1, like=x)
            values = torch.where(same[:, None, None, None], redraw, values)
        return x_new

    # ---------------------------------------------------------------- l2

    def _init_l2(self, x: Tensor) -> Tensor:
        assert self.eps is not None
        n, c, h, w = x.shape
        s = max(min(h, w) // 5, 2)
        sp_h, sp_w = max((h - 5 * s) // 2, 0), max((w - 5 * s) // 2, 0)
        nb_h, nb_w = (h - sp_h) // s, (w - sp_w) // s
        signs = self._signs(n, c, nb_h, nb_w, like=x)
        tiles = signs.repeat_interleave(s, 2).repeat_interleave(s, 3)
        tiles = tiles * meta_pseudo_gaussian(s).to(x.device).repeat(nb_h, nb_w)
        delta = torch.zeros_like(x)
        delta[:, :, sp_h : sp_h + nb_h * s, sp_w : sp_w + nb_w * s] = tiles
        norm = lp_norm(delta, "l2").clamp_min(1e-12).view(-1, 1, 1, 1)
        return (x + delta / norm * self.eps).clamp(0.0, 1.0)

    def _candidate_l2(self, x: Tensor, x_best: Tensor, p: float) -> Tensor:
        assert self.eps is not None
        n, c, h, w = x.shape
        s = max(int(round(math.sqrt(p * h * w))), 3)
        s = min(s + (s % 2 == 0), min(h, w) - 1)
        top, left = self._offsets(n, h - s, x), self._offsets(n, w - s, x)
        top2, left2 = self._offsets(n, h - s, x), self._offsets(n, w - s, x)
        transpose = torch.rand(n, generator=self.generator, device=x.device) > 0.5
        bump, mask1 = _place(meta_pseudo_gaussian(s), top, left, h, w, transpose)
        _, mask2 = _place(torch.ones(s, s), top2, left2, h, w)
        union = mask1 | mask2
        delta = x_best - x
        in_window = delta * mask1
        norm_window = in_window.pow(2).sum((2, 3), keepdim=True).sqrt()
        norm_image = delta.pow(2).sum((1, 2, 3), keepdim=True).sqrt()
        norm_union = (delta * union).pow(2).sum((2, 3), keepdim=True).sqrt()
        new = bump * self._signs(n, c, 1, 1, like=x) + in_window / (1e-10 + norm_window)
        budget = ((self.eps**2 - norm_image**2).clamp_min(0.0) / c + norm_union**2).sqrt()
        new = new / new.pow(2).sum((2, 3), keepdim=True).sqrt().clamp_min(1e-12) * budget
        delta = delta * ~union + new
        norm = lp_norm(delta, "l2").clamp_min(1e-12).view(-1, 1, 1, 1)
        return (x + delta / norm * self.eps).clamp(0.0, 1.0)

    # ---------------------------------------------------------------- search

    def _perturb(self, images: Tensor, labels: Tensor, clean_logits: Tensor | None) -> Tensor:
        assert clean_logits is not None
        adv = images.clone()
        index = (~self.is_adversarial(clean_logits, labels)).nonzero().squeeze(1)
        if index.numel() == 0:
            return adv
        x, y = images[index], labels[index]
        init = self._init_linf if self.norm == "linf" else self._init_l2
        candidate = self._candidate_linf if self.norm == "linf" else self._candidate_l2
        x_best = init(x)
        logits = self._forward(x_best, index)
        margin = self.adversarial_margin(logits, y)
        done = self.is_adversarial(logits, y)
        for i in range(self.n_queries - 2):
            act = (~done).nonzero().squeeze(1)
            if act.numel() == 0:
                break
            x_new = candidate(x[act], x_best[act], p_selection(self.p_init, i, self.n_queries))
            logits = self._forward(x_new, index[act])
            new_margin = self.adversarial_margin(logits, y[act])
            better = new_margin < margin[act]
            upd = act[better]
            x_best[upd] = x_new[better]
            margin[upd] = new_margin[better]
            done[upd] = self.is_adversarial(logits[better], y[upd])
            self._iterations += 1
        adv[index] = x_best
        return adv
