"""A tiny plain-torch trainer: the default ``TrainFn`` for shadow/reference/copy models.

Attacks that train many models (shadow models, LiRA reference models, extraction copies) take
a ``TrainFn`` so the project's Lightning loop can be handed in; this default keeps unit tests
fast and has no Lightning overhead.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# (images (N,C,H,W) float32 in [0,1], targets: labels (N,) int64, probabilities (N,K), or
# multi-hot / per-finding probabilities (N,L) with ``multilabel``, seed)
# -> trained model (eval mode) mapping images to logits.
TrainFn = Callable[[Tensor, Tensor, int], nn.Module]


def train_plain(net: nn.Module, images: Tensor, targets: Tensor, *, epochs: int = 30,
                lr: float = 1e-3, batch_size: int = 64, weight_decay: float = 0.0,
                seed: int = 0, multilabel: bool = False) -> nn.Module:
    """Adam + cross-entropy on ``(images, targets)``; returns ``net`` in eval mode.

    ``targets``: int labels (N,) or soft labels (N, K) (rows summing to 1; used for copying a
    victim's probabilities). ``multilabel``: targets (N, L) in [0, 1] per finding (multi-hot
    labels, or a victim's sigmoid probabilities), loss = BCE with logits averaged over the
    findings (the project's multi-label loss). Shuffling is seeded by ``seed``.
    """
    if len(images) != len(targets):
        raise ValueError(f"images ({len(images)}) and targets ({len(targets)}) differ in length")
    if len(images) == 0:
        raise ValueError("cannot train on an empty set")
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), batch_size):
            idx = order[start : start + batch_size]
            logits = net(images[idx])
            loss = (F.binary_cross_entropy_with_logits(logits, targets[idx].to(logits.dtype))
                    if multilabel else F.cross_entropy(logits, targets[idx]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return net.eval()


def make_train_fn(net_factory: Callable[[], nn.Module], **train_kwargs: float | int) -> TrainFn:
    """A ``TrainFn`` that builds ``net_factory()`` (initialised under ``seed``) and trains it
    with :func:`train_plain` (``train_kwargs``: epochs, lr, batch_size, weight_decay,
    multilabel)."""

    def train_fn(images: Tensor, targets: Tensor, seed: int) -> nn.Module:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            net = net_factory()
        return train_plain(net, images, targets, seed=seed, **train_kwargs)  # type: ignore[arg-type]

    return train_fn
