"""Malicious hospitals: label flipping, backdoor triggers, scaled model replacement.

Data poisoning works on :class:`~medsec.data.types.ImageDataset` (images float32 [0,1] of
shape (N,C,H,W), labels int64 (N,)); model poisoning on the exchanged weight dicts.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from medsec.data.types import ImageDataset
from medsec.training.predict import predict_logits


def flip_labels(data: ImageDataset, num_classes: int) -> ImageDataset:
    """Every label ``y`` becomes ``num_classes - 1 - y`` (binary: 0 <-> 1)."""
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
    ``target``; the rest stays clean (so the main task keeps working: a stealthy backdoor)."""
    rng = np.random.default_rng(seed)
    n = len(data)
    chosen = rng.choice(n, size=max(1, int(round(fraction * n))), replace=False)
    images = np.array(data.images, copy=True)
    labels = np.array(data.labels, copy=True)
    images[chosen] = apply_trigger(images[chosen], size)
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
    test image has another label."""
    keep = test.labels != target
    if not keep.any():
        return float("nan")
    images = test.images[keep]
    images = apply_trigger(images, size) if triggered else np.ascontiguousarray(images)
    preds = predict_logits(model, torch.from_numpy(images)).argmax(1).numpy()
    return float((preds == target).mean())
