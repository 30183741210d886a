"""Robustness metrics: run an attack over a data set and summarise it, and accuracy-vs-eps
curves. Metric names are lower_snake_case and stable (they go to MLflow and DVC)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from medsec.attacks.base import Attack
from medsec.attacks.registry import build_attack
from medsec.metrics.image_quality import PSNR_MAX_DB, perturbation_norms, psnr, ssim
from medsec.training.predict import predict_logits


def _mean(t: Tensor, default: float) -> float:
    return float(t.double().mean()) if t.numel() else default


def _max(t: Tensor, default: float) -> float:
    return float(t.max()) if t.numel() else default


@dataclass
class AttackOutcome:
    """One attack over a data set: adversarial images (N, C, ...) in [0, 1], the clean and
    adversarial predictions (N,) of the scoring model, and the metrics of
    :func:`evaluate_attack`."""

    adversarial: Tensor
    clean_pred: Tensor
    adv_pred: Tensor
    metrics: dict[str, float]


def evaluate_attack(
    model: nn.Module,
    attack: Attack,
    images: Tensor,
    labels: Tensor,
    batch_size: int = 256,
    targets: Tensor | None = None,
) -> dict[str, float]:
    """Attack ``images`` (N, C, ...) in [0, 1] batch by batch and score the result on ``model``.

    The metrics of :func:`run_attack` (which also returns the adversarial images).

    ``labels`` (N,) are the true labels; a targeted attack also needs ``targets`` (N,).
    Returns:
        ``n_examples``, ``clean_acc``, ``robust_acc`` (same examples), ``attack_success_rate``
        (fooled among the examples correct before), ``target_success_rate`` (targeted only),
        ``mean_l0``/``max_l0`` (changed pixel locations), ``mean_l2``/``max_l2``,
        ``mean_linf``/``max_linf``, ``mean_ssim``, ``mean_psnr`` and ``n_perturbed`` - the
        perturbation statistics are over the examples the attack changed (0 norms, SSIM 1 and
        PSNR 100 dB when it changed none) - ``mean_queries`` (model queries per example, for
        black-box attacks) and ``seconds_per_image``.
    """
    return run_attack(model, attack, images, labels, batch_size, targets).metrics


def run_attack(
    model: nn.Module,
    attack: Attack,
    images: Tensor,
    labels: Tensor,
    batch_size: int = 256,
    targets: Tensor | None = None,
) -> AttackOutcome:
    """Attack ``images`` batch by batch; the adversarial images, predictions and metrics
    (see :func:`evaluate_attack`)."""
    if attack.targeted and targets is None:
        raise ValueError("a targeted attack needs `targets` (N,) in evaluate_attack")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
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
    labels = labels.to(images.device)
    clean_pred = predict_logits(model, images, batch_size).argmax(1)
    adv_pred = predict_logits(model, adv, batch_size).argmax(1)
    correct, robust = clean_pred == labels, adv_pred == labels
    delta = adv - images
    changed = delta.flatten(1).ne(0).any(1)
    norms = {k: v[changed] for k, v in perturbation_norms(delta).items()}
    n, n_correct = images.shape[0], int(correct.sum())
    out = {
        "n_examples": float(n),
        "clean_acc": float(correct.float().mean()),
        "robust_acc": float(robust.float().mean()),
        "attack_success_rate": float((correct & ~robust).sum()) / n_correct if n_correct else 0.0,
        "mean_l0": _mean(norms["l0"], 0.0),
        "max_l0": _max(norms["l0"], 0.0),
        "mean_l2": _mean(norms["l2"], 0.0),
        "max_l2": _max(norms["l2"], 0.0),
        "mean_linf": _mean(norms["linf"], 0.0),
        "max_linf": _max(norms["linf"], 0.0),
        "mean_ssim": _mean(ssim(adv[changed], images[changed]), 1.0) if changed.any() else 1.0,
        "mean_psnr": _mean(psnr(adv[changed], images[changed]), PSNR_MAX_DB),
        "n_perturbed": float(changed.sum()),
        "mean_queries": _mean(torch.cat(queries), 0.0),
        "seconds_per_image": seconds / n,
    }
    if attack.targeted:
        assert targets is not None
        out["target_success_rate"] = float((adv_pred == targets.to(adv_pred.device)).float().mean())
    return AttackOutcome(adv, clean_pred, adv_pred, out)


def robustness_curve(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    attacks: Sequence[str] | Mapping[str, Mapping[str, Any]],
    epsilons: Iterable[float],
    batch_size: int = 256,
) -> list[dict[str, Any]]:
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
