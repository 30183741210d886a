"""What a built defense is (:class:`Defense`), its errors, and the classifier check.

A :class:`Defense` carries three views of the defended classifier, all mapping images
(N, C, H, W) in [0, 1] to logits (N, K):

- ``model``: what is deployed and scored (predictions, black-box queries);
- ``attack_model``: what a defense-*unaware* white-box attacker differentiates (for a
  randomised defense: one noise draw per query);
- ``adaptive_model``: what the adaptive attack differentiates (BPDA for non-differentiable
  transforms, EOT for randomised ones); the detector-aware attack uses ``detector`` too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from medsec.errors import MedSecError


class DefenseError(MedSecError, ValueError):
    """A defense cannot be built or evaluated as configured; the message says why."""


@dataclass
class Defense:
    """A built defense (see module docstring).

    ``kind``: ``none`` (the undefended baseline), ``training``, ``transform``, ``detector`` or
    ``certification``. ``adaptive_attack`` names the adaptive attack (``pgd_margin``,
    ``bpda_pgd``, ``eot_pgd``, ``detector_aware_pgd``). ``classifier`` holds trained weights to
    save (training-time defenses and smoothing's base), with ``meta`` for its checkpoint.
    ``smoother`` (certification) is a :class:`~medsec.defenses.smoothing.RandomizedSmoothing`.
    """

    name: str
    kind: str
    model: nn.Module
    attack_model: nn.Module
    adaptive_model: nn.Module
    adaptive_attack: str = "pgd_margin"
    detector: Any = None
    smoother: Any = None
    classifier: nn.Module | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    train_seconds: float = 0.0


def check_classifier(model: nn.Module, image_shape: tuple[int, ...], defense: str) -> int:
    """Check that ``model`` maps images (N, *image_shape) to logits (N, K); return K.

    Raises :class:`DefenseError` naming ``defense`` for dense (segmentation) outputs.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.full((2, *image_shape), 0.5))
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise DefenseError(
            f"defense {defense!r} needs a classifier returning logits (N, num_classes); the "
            f"model returns {shape} for 2 images. Segmentation (dense) models are not "
            "supported by medsec.defenses"
        )
    if out.shape[1] < 2:
        raise DefenseError(f"defense {defense!r} needs >= 2 class logits, got {out.shape[1]}")
    return int(out.shape[1])
