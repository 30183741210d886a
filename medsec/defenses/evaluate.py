"""Score a built :class:`~medsec.defenses.base.Defense` on test images.

Outcome of a defense on an image: its prediction; behind a detector a rejection is an error on
a clean image and a success on an adversarial one. Robust accuracy (the one definition,
:func:`medsec.metrics.robustness.robust_accuracy`): the fraction of examples right on the clean
input *and* under every attack considered, per example. ``robust_acc`` is that worst case over
the standard attacks (PGD, Square) and the adaptive one; ``robust_acc_standard``,
``robust_acc_adaptive`` and ``robust_acc_<attack>`` are reported beside it. Gradient-masking
flags: ``flag_blackbox_stronger`` (Square beats the white-box attacks' worst case),
``flag_acc_rises_with_eps``, ``flag_acc_rises_with_steps`` (PGD at eps/2, eps, 2 eps; and
``steps_factor`` x steps), and ``flag_zero_gradients`` (most input gradients numerically
zero). The PGD of the eps/steps flags is the standard one, except behind a detector where it
is the detector-aware one (the only white-box attack on the whole defense).
Timings go to ``costs``, never to ``metrics``.

Multi-label data (multi-hot labels (N, L)): a prediction is the set of findings with logit
>= 0 (sigmoid >= 0.5) and an example is correct when every finding is right (exact match,
:func:`medsec.metrics.robustness.robust_correct`); the attacks use the per-example BCE and
the multi-label margin (chosen from the labels' shape in :mod:`medsec.attacks.base`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import torch
from torch import Tensor, nn

from medsec.attacks.base import Attack, cross_entropy_loss, model_guard, predictions
from medsec.attacks.fgsm import FGSM
from medsec.attacks.scoring import run_attack
from medsec.defenses.adaptive import DetectorAware, adaptive_pgd, square, standard_pgd
from medsec.defenses.base import Defense
from medsec.defenses.config import DefenseEvalConfig
from medsec.defenses.detectors import detection_metrics
from medsec.defenses.smoothing import certified_accuracy
from medsec.metrics.robustness import robust_accuracy, robust_correct
from medsec.training.predict import predict_logits


@dataclass
class DefenseResult:
    """``metrics``: reproducible numbers (flat, lower_snake_case); ``attacks``: one row per
    attack; ``flags``: gradient-masking flags; ``costs``: timings (seconds, ratios);
    ``correct``: per example (N,) bool, the defended outcome was right on ``clean`` and under
    each attack (``robust_acc`` is the mean of their conjunction)."""

    name: str
    kind: str
    metrics: dict[str, float]
    attacks: list[dict[str, Any]] = field(default_factory=list)
    flags: dict[str, bool] = field(default_factory=dict)
    costs: dict[str, float] = field(default_factory=dict)
    correct: dict[str, Tensor] = field(default_factory=dict)

    @property
    def flagged(self) -> bool:
        return any(self.flags.values())


class _Scorer:
    """Outcomes of one defense on image sets, seeded so randomised defenses repeat; the clean
    outcome of ``images`` is computed once, every robust accuracy is conditioned on it."""

    def __init__(self, defense: Defense, images: Tensor, labels: Tensor, seed: int,
                 batch_size: int) -> None:
        self.defense, self.labels, self.seed, self.batch = defense, labels, seed, batch_size
        self.clean = self.outcome(images, adversarial=False)

    def predict(self, x: Tensor) -> Tensor:
        """Class indices (N,), or predicted findings (N, L) for multi-hot labels."""
        torch.manual_seed(self.seed)
        return predictions(predict_logits(self.defense.model, x, self.batch), self.labels)

    def rejected(self, x: Tensor) -> Tensor:
        det = self.defense.detector
        return det.flag(x, self.batch) if det is not None else torch.zeros(len(x), dtype=bool)

    def outcome(self, x: Tensor, adversarial: bool = True) -> Tensor:
        """Predictions (N,) (multi-label: (N, L)) of the defended system; behind a detector a
        rejection reads as the label on adversarial input (attack stopped), as -1 on clean
        input (false alarm)."""
        pred = self.predict(x)
        if self.defense.detector is None:
            return pred
        stopped = self.labels if adversarial else torch.full_like(pred, -1)
        rejected = self.rejected(x).view(-1, *[1] * (pred.dim() - 1))
        return torch.where(rejected, stopped, pred)

    def right(self, outcome: Tensor) -> Tensor:
        """(N,) bool: ``outcome`` equals the label (multi-label: every finding right)."""
        return robust_correct(self.labels, outcome)

    def acc(self, *outcomes: Tensor) -> float:
        """Robust accuracy: correct on the clean input and under every attack's ``outcomes``
        (no outcome: clean accuracy); :func:`medsec.metrics.robustness.robust_accuracy`."""
        return robust_accuracy(self.labels, self.clean, *outcomes)


STANDARD = ("pgd", "square")


def _attack(attack: Attack, images: Tensor, labels: Tensor, seed: int, batch: int) -> Tensor:
    """Adversarial images (N, C, H, W), batch by batch (noise of randomised models seeded).
    A detector-aware attack's model appends the detector score to the logits: its
    predictions are scored on the classifier alone."""
    torch.manual_seed(seed)
    model = attack.model.model if isinstance(attack.model, DetectorAware) else attack.model
    return run_attack(model, attack, images, labels, batch).adversarial


def input_gradient_norms(model: nn.Module, images: Tensor, labels: Tensor) -> Tensor:
    """L1 norm (N,) of the input gradient of the cross-entropy of ``model`` (eval mode; BCE
    over findings for multi-hot labels (N, L))."""
    with model_guard(model), torch.enable_grad():
        x = images.detach().clone().requires_grad_(True)
        loss = cross_entropy_loss(model(x), labels).sum()
        (grad,) = torch.autograd.grad(loss, x)
    return grad.abs().flatten(1).sum(1)


def inference_overhead(scorer: _Scorer, baseline: nn.Module, images: Tensor, rounds: int = 5
                       ) -> float:
    """Wall time of the defense's inference (prediction, plus the detector's score) over that
    of ``baseline`` on ``images``: the minimum of ``rounds`` interleaved timings of each."""
    best = [float("inf"), float("inf")]
    for _ in range(rounds):
        for i, fn in enumerate((lambda: predict_logits(baseline, images, scorer.batch),
                                lambda: (scorer.predict(images), scorer.rejected(images)))):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best[1] / max(best[0], 1e-9)


def evaluate_defense(defense: Defense, images: Tensor, labels: Tensor, ev: DefenseEvalConfig,
                     seed: int = 0, baseline: nn.Module | None = None) -> DefenseResult:
    """Clean and robust accuracy, detection, certification and flags of ``defense``.

    Args:
        images: test images (N, C, H, W) in [0, 1]; labels: (N,) int64, or multi-hot
            float (N, L) in {0, 1} (multi-label: exact-match correctness).
        ev: threat model and checks. seed: seed of attacks and noise.
        baseline: the undefended model, for ``inference_overhead`` (costs only).
    """
    scorer, b = _Scorer(defense, images, labels, seed, ev.batch_size), ev.batch_size
    metrics: dict[str, float] = {"n_examples": float(len(labels)), "epsilon": ev.eps,
                                 "clean_acc": scorer.acc()}
    if defense.detector is not None:
        metrics["clean_reject_rate"] = float(scorer.rejected(images).double().mean())
    advs = {
        "pgd": _attack(standard_pgd(defense, ev, seed), images, labels, seed, b),
        "square": _attack(square(defense, ev, seed), images, labels, seed, b),
        defense.adaptive_attack: _attack(adaptive_pgd(defense, ev, seed), images, labels, seed, b),
    }
    outs = {name: scorer.outcome(adv) for name, adv in advs.items()}
    rows = [{"attack": name, "family": "standard" if name in STANDARD else "adaptive",
             "robust_acc": scorer.acc(out)} for name, out in outs.items()]
    metrics |= {f"robust_acc_{r['attack']}": r["robust_acc"] for r in rows}
    metrics |= {"robust_acc_standard": scorer.acc(*(outs[n] for n in STANDARD)),
                "robust_acc_adaptive": scorer.acc(outs[defense.adaptive_attack]),
                "robust_acc": scorer.acc(*outs.values())}
    correct = {"clean": scorer.right(scorer.clean)} | {n: scorer.right(o)
                                                       for n, o in outs.items()}
    if defense.detector is not None:
        metrics |= _detection(defense, scorer, images, labels, advs, ev, seed)
    if defense.smoother is not None:
        metrics |= certified_accuracy(defense.smoother.certify(images), labels, ev.radii)
    flags, details = _masking_flags(defense, scorer, images, labels, outs, ev, seed)
    metrics |= details | {f"flag_{k}": float(v) for k, v in flags.items()}
    metrics["gradient_masking_flagged"] = float(any(flags.values()))
    costs = {"train_seconds": defense.train_seconds}
    if baseline is not None:
        costs["inference_overhead"] = inference_overhead(scorer, baseline, images)
    return DefenseResult(defense.name, defense.kind, metrics, rows, flags, costs, correct)


def _detection(defense: Defense, scorer: _Scorer, images: Tensor, labels: Tensor,
               advs: dict[str, Tensor], ev: DefenseEvalConfig, seed: int) -> dict[str, float]:
    """AUROC / TPR at the detector's FPR, per attack, over the adversarial examples that fool
    the classifier (positives) vs all clean test images (negatives)."""
    det = defense.detector
    out: dict[str, float] = {}
    clean_scores = det.scores(images, ev.batch_size)
    for name in dict.fromkeys([*ev.detection_attacks, defense.adaptive_attack]):
        adv = advs.get(name)
        if adv is None:  # e.g. fgsm: generated only for detection
            adv = _attack(FGSM(defense.attack_model, eps=ev.eps), images, labels, seed,
                          ev.batch_size)
        fooled = ~scorer.right(scorer.predict(adv))
        m = detection_metrics(clean_scores, det.scores(adv[fooled], ev.batch_size),
                              det.fpr or 0.05)
        out |= {f"detection_{k}_{name}": v for k, v in m.items()}
        out[f"detection_n_adv_{name}"] = float(fooled.sum())
    return out


def _masking_flags(defense: Defense, scorer: _Scorer, images: Tensor, labels: Tensor,
                   outs: dict[str, Tensor], ev: DefenseEvalConfig, seed: int
                   ) -> tuple[dict[str, bool], dict[str, float]]:
    tol, b = ev.flag_tolerance, ev.batch_size
    detector_aware = defense.detector is not None
    make = adaptive_pgd if detector_aware else standard_pgd
    white = scorer.acc(outs[defense.adaptive_attack if detector_aware else "pgd"])

    def pgd_acc(eps: float, steps: int, alpha: float) -> float:
        attack = make(defense, ev, seed, eps=eps, steps=steps, alpha=alpha)
        return scorer.acc(scorer.outcome(_attack(attack, images, labels, seed, b)))

    half, double = ev.eps / 2, min(2 * ev.eps, 1.0)
    by_eps = [pgd_acc(half, ev.steps, ev.step_size / 2), white,
              pgd_acc(double, ev.steps, min(2 * ev.step_size, 1.0))]
    long = pgd_acc(ev.eps, ev.steps * ev.steps_factor, ev.step_size)
    norms = input_gradient_norms(defense.attack_model, images, labels)
    zero_frac = float((norms <= ev.grad_tol).double().mean())
    whitebox = scorer.acc(*(o for n, o in outs.items() if n != "square"))
    flags = {
        "blackbox_stronger": scorer.acc(outs["square"]) < whitebox - tol,
        "acc_rises_with_eps": any(hi > lo + tol for lo, hi in pairwise(by_eps)),
        "acc_rises_with_steps": long > white + tol,
        "zero_gradients": zero_frac > 0.5,
    }
    details = {"robust_acc_half_eps": by_eps[0], "robust_acc_double_eps": by_eps[2],
               "robust_acc_more_steps": long, "zero_grad_fraction": zero_frac,
               "whitebox_robust_acc": whitebox}
    return flags, details
