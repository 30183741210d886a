"""Malicious hospitals: label flipping, backdoor triggers, scaled model replacement.

Data poisoning works on :class:`~medsec.data.types.ImageDataset` (images float32 [0,1] of
shape (N,C,H,W), labels int64 (N,), or multi-hot float32 (N, L) in {0, 1} for multi-label
data); model poisoning on the exchanged weight dicts.

Multi-label data: label flipping flips every finding (``1 - y``: present <-> absent, the
binary case per finding); a backdoor's ``target`` is a finding index, and poisoned images
are relabelled "that finding only" (one-hot); its success rate counts test images without the
finding that the model calls positive for it (logit >= 0, sigmoid >= 0.5).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from medsec.data.types import ImageDataset
from medsec.training.predict import predict_logits


def is_multi_hot(labels: np.ndarray) -> bool:
    """Whether ``labels`` are multi-hot (N, L) rows (several findings per image)."""
    return np.ndim(labels) == 2


def flip_labels(data: ImageDataset, num_classes: int) -> ImageDataset:
    """Every label ``y`` becomes ``num_classes - 1 - y`` (binary: 0 <-> 1); multi-hot labels
    (N, L): every finding flipped, ``1 - y`` (float32)."""
    if is_multi_hot(data.labels):
        return ImageDataset(data.images, (1.0 - data.labels).astype(np.float32), data.masks)
    return ImageDataset(data.images, (num_classes - 1 - data.labels).astype(np.int64),
                        data.masks)


def apply_trigger(images: np.ndarray, size: int = 3) -> np.ndarray:
    """A copy of ``images`` (N,C,H,W) with a white ``size`` x ``size`` square bottom-right."""
    out = np.array(images, dtype=np.float32, copy=True)
    out[..., -size:, -size:] = 1.0
    return out


def poison_with_trigger(data: ImageDataset, fraction: float, target: int, size: int,
                        seed: int) -> ImageDataset:
    """Stamp the trigger on ``fraction`` of the images (seeded choice), relabel them
    ``target``; the rest stays clean (so the main task keeps working: a stealthy backdoor).
    Multi-hot labels (N, L): the poisoned rows become finding ``target`` only (one-hot)."""
    rng = np.random.default_rng(seed)
    n = len(data)
    chosen = rng.choice(n, size=max(1, int(round(fraction * n))), replace=False)
    images = np.array(data.images, copy=True)
    labels = np.array(data.labels, copy=True)
    images[chosen] = apply_trigger(images[chosen], size)
    if is_multi_hot(labels):
        labels[chosen] = np.eye(labels.shape[1], dtype=np.float32)[target]
        return ImageDataset(images, labels.astype(np.float32), None)
    labels[chosen] = target
    return ImageDataset(images, labels.astype(np.int64), None)


BN_STATISTICS = ("running_mean", "running_var")


def scale_update(global_arrays: Mapping[str, np.ndarray], local_arrays: Mapping[str, np.ndarray],
                 boost: float) -> dict[str, np.ndarray]:
    """Model replacement: ``global + boost * (local - global)`` per weight (float32).

    BatchNorm running statistics are sent as trained, unscaled: a boosted variance can turn
    negative and make the model output NaN, which is sabotage, not a backdoor."""
    return {k: (local_arrays[k] if k.endswith(BN_STATISTICS) else
                global_arrays[k] + boost * (local_arrays[k] - global_arrays[k])).astype(np.float32)
            for k in local_arrays}


def backdoor_success_rate(model: nn.Module, test: ImageDataset, target: int, size: int,
                          triggered: bool = True) -> float:
    """Fraction in [0, 1] of test images whose true label is not ``target`` that the model
    classifies as ``target``, with the trigger stamped on (``triggered=False``: the same images
    clean, the baseline a model that merely favours ``target`` already reaches). NaN when no
    test image has another label. Multi-hot labels (N, L): the fraction of test images
    without finding ``target`` that the model calls positive for it (logit >= 0)."""
    multi = is_multi_hot(test.labels)
    keep = test.labels[:, target] == 0 if multi else test.labels != target
    if not keep.any():
        return float("nan")
    images = test.images[keep]
    images = apply_trigger(images, size) if triggered else np.ascontiguousarray(images)
    logits = predict_logits(model, torch.from_numpy(images))
    hit = logits[:, target] >= 0 if multi else logits.argmax(1) == target
    return float(hit.float().mean())
