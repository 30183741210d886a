"""The attacks a defense is scored against: standard ones and adaptive ones that know it.

Standard (defense-unaware): PGD with cross-entropy on ``defense.attack_model`` (white-box,
the gradient autograd gives: zero through bit depth / JPEG, one noise draw for a randomised
defense, the classifier alone behind a detector) and Square on the same model (black-box).

Adaptive (Athalye, Carlini & Wagner 2018; Tramer et al. 2020): PGD on the CW margin loss
(no softmax saturation) through ``defense.adaptive_model``: BPDA for input transformations
(``bpda_pgd``), EOT over the noise for randomised defenses (``eot_pgd``), and for detectors
:class:`DetectorAwarePGD`, whose loss also pushes the detector score below its threshold
(``detector_aware_pgd``). Training-time defenses get the margin loss alone (``pgd_margin``).
Multi-hot labels (N, L): the losses are the per-example BCE and the multi-label margin
``-min_l (2 y_l - 1) z_l`` (:mod:`medsec.attacks.base`, chosen from the labels' shape).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medsec.attacks.base import Attack, margin_loss
from medsec.attacks.pgd import PGD
from medsec.attacks.square import Square
from medsec.defenses.base import Defense, DefenseError
from medsec.defenses.config import DefenseEvalConfig
from medsec.defenses.detectors import Detector


class DetectorAware(nn.Module):
    """Logits with the normalised detector score appended: (N, K + 1).

    The last column is ``(score - threshold) / scale``: negative = not detected.
    """

    def __init__(self, model: nn.Module, detector: Detector) -> None:
        super().__init__()
        self.model, self.detector = model, detector
        self.threshold = detector.require_threshold()

    def forward(self, x: Tensor) -> Tensor:
        s = (self.detector(x) - self.threshold) / self.detector.scale
        return torch.cat([self.model(x), s[:, None]], dim=1)


class DetectorAwarePGD(PGD):
    """PGD against a classifier guarded by a detector (Carlini & Wagner 2017's combined loss).

    Maximises ``-relu(kappa - margin) - weight * relu(s + kappa)`` where ``margin`` is the CW
    margin (positive = misclassified) and ``s`` the normalised detector score of
    :class:`DetectorAware`; an example succeeds when misclassified *and* ``kappa`` standard
    deviations below the threshold (undetected with a margin that survives recomputation).
    """

    name = "detector_aware_pgd"
    supports_targeted = False

    def __init__(
        self,
        model: DetectorAware,
        eps: float = 8 / 255,
        alpha: float = 2 / 255,
        steps: int = 10,
        restarts: int = 1,
        seed: int = 0,
        weight: float = 1.0,
        kappa: float = 0.1,
    ) -> None:
        if not isinstance(model, DetectorAware):
            raise DefenseError("DetectorAwarePGD needs a DetectorAware(model, detector) view")
        self.weight, self.kappa = float(weight), float(kappa)
        super().__init__(model, eps=eps, alpha=alpha, steps=steps, restarts=restarts,
                         seed=seed, loss_fn=self._loss)

    def _loss(self, out: Tensor, labels: Tensor) -> Tensor:
        logits, s = out[:, :-1], out[:, -1]
        return (-F.relu(self.kappa - margin_loss(logits, labels))
                - self.weight * F.relu(s + self.kappa))

    def check_output(self, logits: Tensor, images: Tensor) -> int:
        return super().check_output(logits[:, :-1], images)

    def is_adversarial(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Misclassified (multi-hot labels: some finding wrong) and undetected by kappa."""
        wrong = Attack.is_adversarial(self, logits[:, :-1], labels)
        return wrong & (logits[:, -1] < -self.kappa)

    def adversarial_margin(self, logits: Tensor, labels: Tensor) -> Tensor:
        return torch.maximum(-margin_loss(logits[:, :-1], labels), logits[:, -1] + self.kappa)


def standard_pgd(
    defense: Defense, ev: DefenseEvalConfig, seed: int, eps: float | None = None,
    steps: int | None = None, alpha: float | None = None,
) -> Attack:
    """Defense-unaware PGD (cross-entropy) on ``defense.attack_model``."""
    return PGD(defense.attack_model, eps=eps or ev.eps, alpha=alpha or ev.step_size,
               steps=steps or ev.steps, restarts=ev.restarts, seed=seed)


def adaptive_pgd(
    defense: Defense, ev: DefenseEvalConfig, seed: int, eps: float | None = None,
    steps: int | None = None, alpha: float | None = None,
) -> Attack:
    """The defense's adaptive attack (see module docstring), one restart more than PGD."""
    kwargs = {"eps": eps or ev.eps, "alpha": alpha or ev.step_size, "steps": steps or ev.steps,
              "restarts": ev.restarts + 1, "seed": seed + 1}
    if defense.adaptive_attack == "detector_aware_pgd":
        if defense.detector is None:
            raise DefenseError(f"defense {defense.name!r} has no detector to attack")
        return DetectorAwarePGD(DetectorAware(defense.model, defense.detector), **kwargs)
    return PGD(defense.adaptive_model, loss_fn=margin_loss, **kwargs)


def square(defense: Defense, ev: DefenseEvalConfig, seed: int) -> Attack:
    """Black-box Square (score-based) querying ``defense.attack_model``: the deployed model,
    but one noise draw per query for a randomised defense (as its API would answer)."""
    return Square(defense.attack_model, eps=ev.eps, n_queries=ev.square_queries,
                  seed=seed + 2)
