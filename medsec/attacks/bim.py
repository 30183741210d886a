"""Basic Iterative Method (Kurakin et al. 2017): PGD without a random start."""

from __future__ import annotations

from torch import nn

from medsec.attacks.base import LossFn
from medsec.attacks.pgd import PGD


class BIM(PGD):
    """Iterative FGSM from the clean image, clipped to the eps ball and [0, 1].

    Args: as :class:`PGD` without ``random_start`` and ``restarts`` (deterministic).
    """

    name = "bim"

    def __init__(self, model: nn.Module, eps: float = 8 / 255, alpha: float = 1 / 255,
                 steps: int = 10, norm: str = "linf", early_stop: bool = True,
                 targeted: bool = False, seed: int = 0, loss_fn: LossFn | None = None) -> None:
        super().__init__(model, eps=eps, alpha=alpha, steps=steps, norm=norm, random_start=False,
                         early_stop=early_stop, targeted=targeted, seed=seed, loss_fn=loss_fn)
