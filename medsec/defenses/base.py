"""What a built defense is (:class:`Defense`), its errors, and its classifier check.

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
from medsec.models.checks import check_classifier


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


def require_classifier(model: nn.Module, image_shape: tuple[int, ...], defense: str) -> int:
    """The number of classes K of ``model``, checked as a classifier (logits (N, K)) on a
    probe batch of two 0.5-valued images (2, *image_shape) by
    :func:`medsec.models.checks.check_classifier`.

    Raises :class:`DefenseError` naming ``defense`` otherwise (e.g. dense segmentation outputs).
    """
    try:
        return check_classifier(model, torch.full((2, *image_shape), 0.5))
    except ValueError as err:
        raise DefenseError(
            f"defense {defense!r} needs a classifier returning logits (N, num_classes): {err}. "
            "Segmentation (dense) models are not supported by medsec.defenses"
        ) from err
