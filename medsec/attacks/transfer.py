"""Transfer attacks: craft on a surrogate model, evaluate on a victim model."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medsec.attacks.base import Attack, lp_norm
from medsec.training.predict import predict_logits


def transfer_evaluate(attack: Attack, victim: nn.Module, images: Tensor, labels: Tensor,
                      batch_size: int = 256) -> dict[str, float]:
    """Craft adversarials with ``attack`` (on its own model, the surrogate) and score them on
    ``victim``.

    Args:
        attack: an untargeted attack whose ``model`` is the surrogate.
        victim: the model under evaluation (pixel-space logits).
        images: (N, C, H, W) in [0, 1]. labels: (N,) int64 true labels.

    Returns lower_snake_case metrics: ``surrogate_clean_acc``, ``surrogate_robust_acc``,
    ``victim_clean_acc``, ``victim_robust_acc`` (same examples), ``transfer_success_rate``
    (fooled among the examples the victim got right before), ``mean_l2``, ``mean_linf``.
    """
    if attack.targeted:
        raise ValueError("transfer_evaluate expects an untargeted attack")
    advs = [
        attack(images[i : i + batch_size], labels[i : i + batch_size])
        for i in range(0, images.shape[0], batch_size)
    ]
    adv = torch.cat(advs)
    labels = labels.to(images.device)
    s_clean = predict_logits(attack.model, images, batch_size).argmax(1) == labels
    s_adv = predict_logits(attack.model, adv, batch_size).argmax(1) == labels
    v_clean = predict_logits(victim, images, batch_size).argmax(1) == labels
    v_adv = predict_logits(victim, adv, batch_size).argmax(1) == labels
    n_correct = int(v_clean.sum())
    return {
        "surrogate_clean_acc": float(s_clean.float().mean()),
        "surrogate_robust_acc": float(s_adv.float().mean()),
        "victim_clean_acc": float(v_clean.float().mean()),
        "victim_robust_acc": float(v_adv.float().mean()),
        "transfer_success_rate": float((v_clean & ~v_adv).sum()) / n_correct if n_correct else 0.0,
        "mean_l2": float(lp_norm(adv - images, "l2").mean()),
        "mean_linf": float(lp_norm(adv - images, "linf").mean()),
    }
