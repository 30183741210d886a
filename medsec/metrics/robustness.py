"""Robustness metrics of one attack over a data set, from its adversarial images and the
scoring model's predictions. Metric names are lower_snake_case and stable (they go to MLflow
and DVC). Running attacks is :mod:`medsec.attacks.scoring`'s work."""

from __future__ import annotations

from typing import TypeVar

import numpy as np
from torch import Tensor

from medsec.metrics.image_quality import PSNR_MAX_DB, perturbation_norms, psnr, ssim


def _mean(t: Tensor, default: float) -> float:
    return float(t.double().mean()) if t.numel() else default


def _max(t: Tensor, default: float) -> float:
    return float(t.max()) if t.numel() else default


Preds = TypeVar("Preds", Tensor, np.ndarray)


def robust_correct(labels: Preds, clean_pred: Preds, *adv_preds: Preds) -> Preds:
    """(N,) bool: correct on the clean input AND under every attack - the one definition of
    robustness (design doc). ``labels``, ``clean_pred`` and each of ``adv_preds`` are (N,)
    class indices, or multi-hot (N, L) findings (multi-label: an example is correct when
    every finding is right, exact match), all torch tensors (on one device) or all numpy
    arrays. A misclassified example an attack flips to its label is not robust."""
    def right(pred: Preds) -> Preds:
        same = pred == labels
        return same.all(1) if same.ndim == 2 else same

    robust = right(clean_pred)
    for adv_pred in adv_preds:
        robust = robust & right(adv_pred)
    return robust


def robust_accuracy(labels: Preds, clean_pred: Preds, *adv_preds: Preds) -> float:
    """Robust accuracy in [0, 1]: the mean of :func:`robust_correct` (0.0 for no examples)."""
    robust = robust_correct(labels, clean_pred, *adv_preds)
    return float(robust.sum()) / len(robust) if len(robust) else 0.0


def attack_metrics(images: Tensor, adv: Tensor, labels: Tensor, clean_pred: Tensor,
                   adv_pred: Tensor, queries: Tensor, seconds: float,
                   targets: Tensor | None = None) -> dict[str, float]:
    """Metrics of an attack: clean ``images`` and ``adv`` (N, C, ...) in [0, 1], true
    ``labels`` (N,) (multi-hot (N, L) for multi-label data), the scoring model's
    ``clean_pred``/``adv_pred`` in the labels' form, model ``queries`` (N,)
    per example, the attack's wall-clock ``seconds``, and ``targets`` (N,) when targeted.

    Returns ``n_examples``, ``clean_acc``, ``robust_acc`` (:func:`robust_correct`: correct
    before and after),
    ``attack_success_rate`` (fooled among the examples correct before),
    ``target_success_rate`` (targeted only), ``mean_l0``/``max_l0`` (changed pixel
    locations), ``mean_l2``/``max_l2``, ``mean_linf``/``max_linf``, ``mean_ssim``,
    ``mean_psnr`` and ``n_perturbed`` - the perturbation statistics are over the examples the
    attack changed (0 norms, SSIM 1 and PSNR 100 dB when it changed none) - ``mean_queries``
    and ``seconds_per_image``.
    """
    labels = labels.to(images.device)
    correct = robust_correct(labels, clean_pred)
    robust = robust_correct(labels, clean_pred, adv_pred)
    delta = adv - images
    changed = delta.flatten(1).ne(0).any(1)
    norms = {k: v[changed] for k, v in perturbation_norms(delta).items()}
    n, n_correct = images.shape[0], int(correct.sum())
    out = {
        "n_examples": float(n),
        "clean_acc": float(correct.float().mean()),
        "robust_acc": float(robust.double().mean()),
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
        "mean_queries": _mean(queries, 0.0),
        "seconds_per_image": seconds / n,
    }
    if targets is not None:
        out["target_success_rate"] = float((adv_pred == targets.to(adv_pred.device)).float().mean())
    return out
