"""Reference-model membership inference: LiRA (Carlini et al. 2022) and RMIA (Zarifzadeh et al.
2024).

The attacker trains ``K`` reference models on random halves of data that contains the audited
examples (plus, optionally, extra population data). Each audited example is in the training set
of exactly ``K/2`` reference models ("in" models) and out of the other ``K/2``; this balanced
design makes every per-example in/out statistic estimable. Scores are per example (N,),
higher = more likely a member of the *target* model's training set.

Multi-label (multi-hot labels (N, L)): ``p_y`` is the probability of the true finding vector,
``prod_l p(y_l|x)`` (see :mod:`medsec.privacy.membership`).

- LiRA online: Gaussian fits of ``phi = log(p_y / (1 - p_y))`` over in and out models,
  score = log N(phi_target; in) - log N(phi_target; out).
- LiRA offline: out models only, score = (phi_target - mu_out) / sigma_out (one-sided test).
  With few reference models (K < 64) Carlini et al. use one variance shared by all examples
  (``global_variance=True``).
- RMIA: likelihood ratio ``p(x|target) / p(x)`` (``p(x)`` = mean over reference models)
  compared with the same ratio on population examples ``z``; score = fraction of ``z``
  dominated by a factor ``gamma``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from medsec.privacy.membership import is_multilabel, logit_confidence, true_log_prob
from medsec.privacy.plain_train import TrainFn
from medsec.training.predict import predict_logits


@dataclass
class ReferenceModels:
    """``models`` (K) and ``in_mask`` (K, N): audited example n was in model k's training set."""

    models: list[nn.Module]
    in_mask: np.ndarray


def balanced_in_mask(num_models: int, num_examples: int, seed: int) -> np.ndarray:
    """(K, N) bool with exactly K/2 True per column (each example in half of the models)."""
    if num_models < 2 or num_models % 2:
        raise ValueError(f"num_models must be an even number >= 2, got {num_models}")
    rng = np.random.default_rng(seed)
    column = np.arange(num_models) < num_models // 2
    return np.stack([rng.permutation(column) for _ in range(num_examples)], axis=1)


def train_reference_models(images: Tensor, labels: Tensor, train_fn: TrainFn, num_models: int = 8,
                           population_images: Tensor | None = None,
                           population_labels: Tensor | None = None,
                           seed: int = 0) -> ReferenceModels:
    """Train ``num_models`` reference models; model k sees the audited examples of
    ``in_mask[k]`` plus a random half of the (optional) population data."""
    mask = balanced_in_mask(num_models, len(labels), seed)
    rng = np.random.default_rng(seed + 1)
    models = []
    for k in range(num_models):
        x, y = images[torch.from_numpy(mask[k])], labels[torch.from_numpy(mask[k])]
        if population_images is not None and population_labels is not None:
            half = torch.from_numpy(rng.permutation(len(population_labels))[
                : len(population_labels) // 2])
            x = torch.cat([x, population_images[half]])
            y = torch.cat([y, population_labels[half]])
        models.append(train_fn(x, y, seed + 2000 + k))
    return ReferenceModels(models=models, in_mask=mask)


def _phi(model: nn.Module, images: Tensor, labels: Tensor) -> np.ndarray:
    return logit_confidence(predict_logits(model, images), labels)


def _masked_stats(values: np.ndarray, mask: np.ndarray, global_variance: bool
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per-example mean and std of ``values`` (K, N) over rows where ``mask`` is True."""
    count = mask.sum(axis=0)
    if (count == 0).any():
        raise ValueError("some example has no reference model on this side (in/out)")
    mean = np.where(mask, values, 0.0).sum(axis=0) / count
    sq = np.where(mask, (values - mean) ** 2, 0.0)
    if global_variance:
        std = np.full_like(mean, np.sqrt(sq.sum() / max(count.sum() - len(count), 1)))
    else:
        std = np.sqrt(sq.sum(axis=0) / np.maximum(count - 1, 1))
    return mean, np.maximum(std, 1e-6)


def _log_normal(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return -0.5 * ((x - mean) / std) ** 2 - np.log(std)


def lira_scores(target_model: nn.Module, images: Tensor, labels: Tensor, refs: ReferenceModels,
                online: bool = True, global_variance: bool | None = None) -> np.ndarray:
    """LiRA score (N,) for the audited examples ``refs`` was trained around.

    ``global_variance`` None picks True when K < 64 (as Carlini et al. do for few models).
    """
    if refs.in_mask.shape[1] != len(labels):
        raise ValueError(f"refs cover {refs.in_mask.shape[1]} examples, got {len(labels)}")
    if global_variance is None:
        global_variance = len(refs.models) < 64
    phi_target = _phi(target_model, images, labels)
    phi_ref = np.stack([_phi(m, images, labels) for m in refs.models])
    mu_out, sd_out = _masked_stats(phi_ref, ~refs.in_mask, global_variance)
    if not online:
        return (phi_target - mu_out) / sd_out
    mu_in, sd_in = _masked_stats(phi_ref, refs.in_mask, global_variance)
    return _log_normal(phi_target, mu_in, sd_in) - _log_normal(phi_target, mu_out, sd_out)


def _true_probs(model: nn.Module, images: Tensor, labels: Tensor) -> np.ndarray:
    """``p(y|x)`` (N,): the true class' softmax probability, or for multi-hot labels (N, L)
    the probability of the whole finding vector ``prod_l p(y_l|x)``."""
    if is_multilabel(labels):
        return torch.exp(true_log_prob(predict_logits(model, images), labels)).numpy()
    probs = torch.softmax(predict_logits(model, images).double(), dim=1)
    return probs.gather(1, labels.long().view(-1, 1)).squeeze(1).numpy()


def rmia_scores(target_model: nn.Module, images: Tensor, labels: Tensor, refs: ReferenceModels,
                population_images: Tensor, population_labels: Tensor, gamma: float = 1.0,
                offline_a: float | None = None) -> np.ndarray:
    """RMIA score (N,): fraction of population examples ``z`` with
    ``[p(x|t)/p(x)] / [p(z|t)/p(z)] >= gamma``.

    ``p(.)`` is the mean true-class probability over all reference models (online RMIA). With
    ``offline_a`` set, ``p(x)`` uses out models only: ``0.5 ((1+a) p_out(x) + (1-a))``. The
    population must be data the target did not train on (e.g. the attacker's pool).
    """
    if gamma <= 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    p_x_target = _true_probs(target_model, images, labels)
    p_x_refs = np.stack([_true_probs(m, images, labels) for m in refs.models])
    if offline_a is None:
        p_x = p_x_refs.mean(axis=0)
    else:
        out = ~refs.in_mask
        p_out = np.where(out, p_x_refs, 0.0).sum(axis=0) / out.sum(axis=0)
        p_x = 0.5 * ((1 + offline_a) * p_out + (1 - offline_a))
    p_z_target = _true_probs(target_model, population_images, population_labels)
    p_z = np.stack([_true_probs(m, population_images, population_labels)
                    for m in refs.models]).mean(axis=0)
    ratio_x = p_x_target / np.maximum(p_x, 1e-30)
    ratio_z = p_z_target / np.maximum(p_z, 1e-30)
    return (ratio_x[:, None] / ratio_z[None, :] >= gamma).mean(axis=1)
