"""Fast Gradient Sign Method (Goodfellow et al. 2015); FGM for the l2 norm."""

from __future__ import annotations

from torch import Tensor, nn

from medsec.attacks.base import Attack, LossFn


class FGSM(Attack):
    """One steepest-ascent step of size ``eps``: ``x + eps * sign(grad)`` (linf).

    Args:
        model: pixel-space classifier returning logits (N, K).
        eps: budget in pixel units (linf <= 1).
        norm: ``"linf"`` (FGSM) or ``"l2"`` (fast gradient method).
        targeted: step towards the target labels (descend their loss).
        seed: unused (deterministic), kept for a uniform signature.
        loss_fn: per-example loss, default cross-entropy.
    """

    name = "fgsm"
    supports_targeted = True
    needs_clean_logits = False  # the single gradient pass validates the model output

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        norm: str = "linf",
        targeted: bool = False,
        seed: int = 0,
        loss_fn: LossFn | None = None,
    ) -> None:
        super().__init__(model, eps=eps, norm=norm, targeted=targeted, seed=seed, loss_fn=loss_fn)

    def _perturb(self, images: Tensor, labels: Tensor, clean_logits: Tensor | None) -> Tensor:
        assert self.eps is not None
        grad, _, _ = self._gradient(images, labels)
        self._iterations = 1
        return self._ascent_step(images, images, grad, self.eps)
