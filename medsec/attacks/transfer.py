"""Transfer attacks: craft on a surrogate model, evaluate on a victim model."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medsec.attacks.base import Attack, lp_norm, predictions
from medsec.metrics.robustness import robust_accuracy, robust_correct
from medsec.training.predict import predict_logits


def transfer_evaluate(attack: Attack, victim: nn.Module, images: Tensor, labels: Tensor,
                      batch_size: int = 256) -> dict[str, float]:
    """Craft adversarials with ``attack`` (on its own model, the surrogate) and score them on
    ``victim``.

    Args:
        attack: an untargeted attack whose ``model`` is the surrogate.
        victim: the model under evaluation (pixel-space logits).
        images: (N, C, H, W) in [0, 1]. labels: (N,) int64 true labels, or multi-hot
            (N, L) (an example is correct when every finding is right).

    Returns lower_snake_case metrics: ``surrogate_clean_acc``, ``surrogate_robust_acc``,
    ``victim_clean_acc``, ``victim_robust_acc`` (correct before and after),
    ``transfer_success_rate`` (fooled among the examples the victim got right before),
    ``mean_l2``, ``mean_linf``.
    """
    if attack.targeted:
        raise ValueError("transfer_evaluate expects an untargeted attack")
    advs = [
        attack(images[i : i + batch_size], labels[i : i + batch_size])
        for i in range(0, images.shape[0], batch_size)
    ]
    adv = torch.cat(advs)
    labels = labels.to(images.device)
    pairs = ((attack.model, images), (attack.model, adv), (victim, images), (victim, adv))
    s_clean, s_adv, v_clean, v_adv = (predictions(predict_logits(m, x, batch_size), labels)
                                      for m, x in pairs)
    v_ok, v_robust = robust_correct(labels, v_clean), robust_correct(labels, v_clean, v_adv)
    n_correct = int(v_ok.sum())
    return {
        "surrogate_clean_acc": float(robust_correct(labels, s_clean).double().mean()),
        "surrogate_robust_acc": robust_accuracy(labels, s_clean, s_adv),
        "victim_clean_acc": float(v_ok.double().mean()),
        "victim_robust_acc": float(v_robust.double().mean()),
        "transfer_success_rate": float((v_ok & ~v_robust).sum()) / n_correct if n_correct else 0.0,
        "mean_l2": float(lp_norm(adv - images, "l2").mean()),
        "mean_linf": float(lp_norm(adv - images, "linf").mean()),
    }
