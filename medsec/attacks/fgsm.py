"""Fast Gradient Sign Method (Goodfellow et al. 2015); FGM for the l2 norm."""

from __future__ import annotations

from torch import nn

from medsec.attacks.base import LossFn
from medsec.attacks.pgd import PGD


class FGSM(PGD):
    """One steepest-ascent step of size ``eps``: ``x + eps * sign(grad)`` (linf) - PGD with a
    single step of size eps from the clean image.

    Args:
        model: pixel-space classifier returning logits (N, K).
        eps: budget in pixel units (linf <= 1).
        norm: ``"linf"`` (FGSM) or ``"l2"`` (fast gradient method).
        targeted: step towards the target labels (descend their loss).
        seed: unused (deterministic), kept for a uniform signature.
        loss_fn: per-example loss, default cross-entropy.
    """

    name = "fgsm"

    def __init__(self, model: nn.Module, eps: float = 8 / 255, norm: str = "linf",
                 targeted: bool = False, seed: int = 0, loss_fn: LossFn | None = None) -> None:
        super().__init__(model, eps=eps, alpha=eps, steps=1, norm=norm, random_start=False,
                         early_stop=False, targeted=targeted, seed=seed, loss_fn=loss_fn)
