"""Momentum Iterative Method (Dong et al. 2018)."""

from __future__ import annotations

from torch import Tensor, nn

from medsec.attacks.base import LossFn, check_positive, lp_norm, per_example
from medsec.attacks.pgd import PGD


class MIM(PGD):
    """PGD along a momentum of l1-normalised gradients, ``g = decay*g + grad/|grad|_1``.

    Args: as :class:`PGD` plus ``decay`` (momentum factor, 1.0 in the paper); starts at the
    clean image unless ``random_start``.
    """

    name = "mim"

    def __init__(self, model: nn.Module, eps: float = 8 / 255, alpha: float = 2 / 255,
                 steps: int = 10, decay: float = 1.0, norm: str = "linf",
                 random_start: bool = False, early_stop: bool = True, targeted: bool = False,
                 seed: int = 0, loss_fn: LossFn | None = None) -> None:
        super().__init__(model, eps=eps, alpha=alpha, steps=steps, norm=norm,
                         random_start=random_start, early_stop=early_stop, targeted=targeted,
                         seed=seed, loss_fn=loss_fn)
        self.decay = float(check_positive("decay", decay, allow_zero=True))

    def _init_state(self, images: Tensor) -> dict[str, Tensor]:
        return {"momentum": images.new_zeros(images.shape)}

    def _direction(self, grad: Tensor, state: dict[str, Tensor], rows: Tensor | None) -> Tensor:
        l1 = per_example(lp_norm(grad, "l1").clamp_min(1e-12), grad)
        if rows is None:
            return state["momentum"].mul_(self.decay).add_(grad / l1)
        momentum = state["momentum"][rows] * self.decay + grad / l1
        state["momentum"][rows] = momentum
        return momentum
