"""Segmentation metrics via MONAI (Dice, IoU, 95% Hausdorff per class) and lesion counting.

Inputs are class-index masks (N, *S) (predictions = ``logits.argmax(1)``). Per-image scores
follow MONAI; a class absent from the ground truth of an image is skipped for that image
(``ignore_empty``), so ``dice_lesion`` averages over images that hold a lesion. For target
masks (targeted attacks) absent-and-absent counts as a perfect 1.0 (see :func:`target_dice`).
"""

from __future__ import annotations

import math
import warnings

import torch
from monai.metrics import DiceMetric, HausdorffDistanceMetric, MeanIoU
from monai.networks.utils import one_hot
from scipy import ndimage
from torch import Tensor


def _onehot(masks: Tensor, num_classes: int) -> Tensor:
    return one_hot(masks.long().unsqueeze(1), num_classes=num_classes, dim=1)


def per_image_scores(pred: Tensor, target: Tensor, num_classes: int,
                     ignore_empty: bool = True) -> dict[str, Tensor]:
    """Per-image, per-class ``dice`` and ``iou``, each (N, num_classes) (NaN where skipped)."""
    p, t = _onehot(pred, num_classes), _onehot(target, num_classes)
    dice = DiceMetric(include_background=True, reduction="none", ignore_empty=ignore_empty)
    iou = MeanIoU(include_background=True, reduction="none", ignore_empty=ignore_empty)
    return {"dice": dice(p, t), "iou": iou(p, t)}


def _nanmean(values: Tensor) -> float:
    finite = values[torch.isfinite(values)]
    return float(finite.mean()) if finite.numel() else float("nan")


def segmentation_metrics(pred: Tensor, target: Tensor, num_classes: int,
                         class_names: list[str] | None = None,
                         prefix: str = "") -> dict[str, float]:
    """``{prefix}dice_<class>``, ``iou_<class>``, ``hd95_<class>`` (pixels/voxels) per class
    (background included), plus ``{prefix}dice`` = mean Dice over the foreground classes."""
    names = class_names or ["background", "lesion", *[f"class{k}" for k in range(2, num_classes)]]
    scores = per_image_scores(pred, target, num_classes)
    p, t = _onehot(pred, num_classes), _onehot(target, num_classes)
    with warnings.catch_warnings():  # MONAI warns for images where a class is absent
        warnings.simplefilter("ignore")
        hd = HausdorffDistanceMetric(include_background=True, percentile=95,
                                     reduction="none")(p, t)
    present = t.flatten(2).sum(2) > 0  # HD95 only where the class exists in the truth
    hd = torch.where(present & (p.flatten(2).sum(2) > 0), hd, torch.nan)
    out = {f"{prefix}{metric}_{names[k]}": _nanmean(values[:, k]) for k in range(num_classes)
           for metric, values in (("dice", scores["dice"]), ("iou", scores["iou"]), ("hd95", hd))}
    return out | {f"{prefix}dice": _nanmean(scores["dice"][:, 1:])}


def target_dice(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """Per-image Dice (N,) of the prediction to a target mask, mean over the FOREGROUND
    classes, with absent-in-both = 1.0: an erase target (all background) scores 1 only when no
    lesion pixel is left, 0 when any remains."""
    scores = per_image_scores(pred, target, num_classes, ignore_empty=False)["dice"][:, 1:]
    return scores.mean(dim=1)


def lesion_hits(pred: Tensor, reference: Tensor, min_overlap: float = 0.5) -> tuple[int, int]:
    """Count lesions (connected foreground components of ``reference`` (N, *S)) and how many of
    them ``pred`` (N, *S) finds (>= ``min_overlap`` of the component's pixels predicted as
    foreground). Returns (n_lesions, n_found)."""
    ref, prd = reference.cpu().numpy() > 0, pred.cpu().numpy() > 0
    total = found = 0
    for r, p in zip(ref, prd, strict=True):
        structure = ndimage.generate_binary_structure(r.ndim, r.ndim)  # 8/26-connectivity
        labels, n = ndimage.label(r, structure=structure)
        total += int(n)
        found += sum(int(p[labels == k].mean() >= min_overlap) for k in range(1, int(n) + 1))
    return total, found


def fraction(numerator: int, denominator: int) -> float:
    """numerator / denominator, NaN when the denominator is 0."""
    return numerator / denominator if denominator else math.nan
