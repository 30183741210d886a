"""Scoring attacks: run one over a data set (batched) and score it on a model, accuracy-vs-eps
curves, and the suite-level scores - the linf worst case and gradient-masking flags."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from medsec.attacks.base import Attack, predictions
from medsec.attacks.registry import build_attack
from medsec.attacks.results import AttackPoint, point_key
from medsec.metrics.classification import multilabel_metrics
from medsec.metrics.robustness import attack_metrics, robust_correct
from medsec.training.predict import predict_logits


@dataclass
class AttackOutcome:
    """One attack over a data set: adversarial images (N, C, ...) in [0, 1], the clean and
    adversarial predictions (N,) of the scoring model (multi-hot (N, L) for multi-label
    data, :func:`medsec.attacks.base.predictions`), and the metrics of
    :func:`evaluate_attack`."""

    adversarial: Tensor
    clean_pred: Tensor
    adv_pred: Tensor
    metrics: dict[str, float]


def evaluate_attack(model: nn.Module, attack: Attack, images: Tensor, labels: Tensor,
                    batch_size: int = 256, targets: Tensor | None = None) -> dict[str, float]:
    """Attack ``images`` (N, C, ...) in [0, 1] batch by batch and score the result on ``model``.

    ``labels`` (N,) are the true labels (multi-hot (N, L) for multi-label data: an example
    is correct when every finding is right); a targeted attack also needs ``targets`` (N,).
    Returns the metrics of :func:`medsec.metrics.robustness.attack_metrics` (``robust_acc``,
    ``attack_success_rate``, perturbation norms, SSIM/PSNR, ``mean_queries``, ...); for
    multi-hot labels also ``macro_auc``, the macro ROC AUC of the adversarial logits (when
    some finding has both values among the examples).
    """
    return run_attack(model, attack, images, labels, batch_size, targets).metrics


def run_attack(model: nn.Module, attack: Attack, images: Tensor, labels: Tensor,
               batch_size: int = 256, targets: Tensor | None = None) -> AttackOutcome:
    """Attack ``images`` batch by batch; the adversarial images, predictions and metrics
    (see :func:`evaluate_attack`)."""
    if attack.targeted and targets is None:
        raise ValueError("a targeted attack needs `targets` (N,) in evaluate_attack")
    if labels.dim() not in (1, 2) or labels.shape[0] != images.shape[0]:
        raise ValueError(f"labels must have shape ({images.shape[0]},) or multi-hot "
                         f"({images.shape[0]}, num_findings), got {tuple(labels.shape)}")
    goal = targets if attack.targeted else labels
    assert goal is not None
    advs, queries, seconds = [], [], 0.0
    for i in range(0, images.shape[0], batch_size):
        start = time.perf_counter()
        advs.append(attack(images[i : i + batch_size], goal[i : i + batch_size]))
        seconds += time.perf_counter() - start
        assert attack.last_stats is not None
        queries.append(attack.last_stats.queries.float())
    adv = torch.cat(advs)
    clean_pred = predictions(predict_logits(model, images, batch_size), labels)
    adv_logits = predict_logits(model, adv, batch_size)
    adv_pred = predictions(adv_logits, labels)
    out = attack_metrics(images, adv, labels, clean_pred, adv_pred, torch.cat(queries), seconds,
                         targets if attack.targeted else None)
    if labels.dim() == 2:  # multi-label: also the ranking quality left under attack
        auc = multilabel_metrics(adv_logits, labels.cpu())["auc"]
        if math.isfinite(auc):
            out["macro_auc"] = auc
    return AttackOutcome(adv, clean_pred, adv_pred, out)


def robustness_curve(model: nn.Module, images: Tensor, labels: Tensor,
                     attacks: Sequence[str] | Mapping[str, Mapping[str, Any]],
                     epsilons: Iterable[float], batch_size: int = 256) -> list[dict[str, Any]]:
    """Accuracy against epsilon for several registered attacks.

    ``attacks`` is a list of registry names or a mapping name -> extra constructor params
    (without ``eps``). A param value that is callable is called with eps (e.g.
    ``{"pgd": {"alpha": lambda eps: eps / 4}}``). Returns one tidy row per (attack, eps):
    ``{"attack": name, "epsilon": eps, **evaluate_attack(...)}``.
    """
    specs = dict(attacks) if isinstance(attacks, Mapping) else {name: {} for name in attacks}
    rows: list[dict[str, Any]] = []
    for name, params in specs.items():
        for eps in epsilons:
            kwargs = {k: (v(eps) if callable(v) else v) for k, v in params.items()}
            attack = build_attack(name, model, eps=float(eps), **kwargs)
            metrics = evaluate_attack(model, attack, images, labels, batch_size)
            rows.append({"attack": name, "epsilon": float(eps), **metrics})
    return rows


WORST_CASE_NORMS = ("linf", "l2")
"""Norms with a per-example worst case (metric names: results.worst_case_stem)."""


def worst_case(points: list[AttackPoint], labels: np.ndarray,
               clean_pred: np.ndarray) -> list[dict[str, Any]]:
    """Per (norm, epsilon), L-inf then L2: robust = correct before and after every attack of
    that norm at that epsilon (per example). Rows ``{norm, eps, robust_acc,
    attack_success_rate, attacks}``; other norms (l0) and unbounded attacks are left out."""
    correct = robust_correct(labels, clean_pred)  # per example (exact match when multi-hot)
    by_eps: dict[tuple[str, float], list[AttackPoint]] = {}
    for point in points:
        if point.eps is not None and point.norm in WORST_CASE_NORMS:
            by_eps.setdefault((point.norm, point.eps), []).append(point)
    rows = []
    for norm, eps in sorted(by_eps, key=lambda k: (WORST_CASE_NORMS.index(k[0]), k[1])):
        robust = robust_correct(labels, clean_pred, *(p.adv_pred for p in by_eps[norm, eps]))
        n_correct = int(correct.sum())
        rows.append(
            {
                "norm": norm,
                "eps": eps,
                "robust_acc": float(robust.mean()),
                "attack_success_rate": float((correct & ~robust).sum()) / n_correct
                if n_correct
                else 0.0,
                "attacks": [p.spec.id for p in by_eps[norm, eps]],
            }
        )
    return rows


GRADIENT_ATTACKS = ("fgsm", "bim", "pgd", "mim", "apgd", "cw", "deepfool")
BLACK_BOX_ATTACKS = ("square", "one_pixel")


def masking_flags(points: list[AttackPoint], n_examples: int) -> list[str]:
    """Signs of gradient masking (design doc): robust accuracy that rises with epsilon, and a
    black-box attack stronger than every gradient attack at the same norm and epsilon. A
    difference must exceed one example to count. Targeted attacks and UAP are left out."""
    tol = 1.0 / max(n_examples, 1)
    flags: list[str] = []
    untargeted = [p for p in points if not p.spec.targeted and p.spec.name != "uap"]
    by_id: dict[str, list[AttackPoint]] = {}
    for p in untargeted:
        if p.eps is not None:
            by_id.setdefault(p.spec.id, []).append(p)
    for ident, pts in by_id.items():
        pts = sorted(pts, key=lambda p: p.eps or 0.0)
        for lo, hi in zip(pts, pts[1:], strict=False):
            a, b = lo.metrics["robust_acc"], hi.metrics["robust_acc"]
            if b > a + tol:
                flags.append(f"{ident}: robust_acc rises from {a:.3f} ({lo.key}) to {b:.3f} "
                             f"({hi.key})")
    groups: dict[tuple[str, float], list[AttackPoint]] = {}
    for p in untargeted:
        if p.eps is not None:
            groups.setdefault((p.norm, p.eps), []).append(p)
    for (norm, eps), pts in groups.items():
        white = [p.metrics["robust_acc"] for p in pts if p.spec.name in GRADIENT_ATTACKS]
        black = [p for p in pts if p.spec.name in BLACK_BOX_ATTACKS]
        if white and black:
            best = min(black, key=lambda p: p.metrics["robust_acc"])
            if best.metrics["robust_acc"] < min(white) - tol:
                flags.append(f"black-box {best.spec.id} ({best.metrics['robust_acc']:.3f}) "
                             f"beats every gradient attack ({min(white):.3f}) at {norm} "
                             f"{point_key(eps)}")
    return flags
