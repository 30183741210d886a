"""The segmentation stage's work, without Prefect or MLflow: data -> train -> evaluate -> attack.

:func:`load_seg_data` picks the data, :func:`train_segmenter` fits the configured segmenter
in the project's Lightning loop, :func:`run_attack` runs one configured attack and scores it
(:func:`attack_metrics`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from medsec.attacks.base import Attack
from medsec.attacks.noise import random_perturbation
from medsec.data.types import LoadedDataset
from medsec.data.validation import ValidationReport, validate_dataset
from medsec.defenses.training import AdversarialBatches
from medsec.errors import ConfigError
from medsec.metrics.image_quality import perturbation_norms, ssim
from medsec.segmentation.attacks import SegFGSM, SegPGD, dilate_region
from medsec.segmentation.config import SegAdversarialTraining, SegAttackConfig, SegmentationConfig
from medsec.segmentation.data import (
    SegData,
    SegSplit,
    from_loaded,
    load_segmentation_folder,
    phantom_volumes,
    validation_splits,
)
from medsec.segmentation.metrics import fraction, lesion_hits, segmentation_metrics, target_dice
from medsec.segmentation.models import PixelSpaceSegmenter, build_segmenter
from medsec.segmentation.module import SegmenterModule, fit_segmenter, predict_masks
from medsec.training.fit import FitResult, seed_everything

SUCCESS_DICE = 0.9
"""A targeted attack succeeds on an image when its target Dice reaches this value."""


def load_seg_data(cfg: SegmentationConfig, loaded: LoadedDataset | None = None) -> SegData:
    """The configured data: ``loaded`` (the 2D phantoms) for ``phantoms``, else generated
    volumes or a folder; ``num_classes`` from the config when set (else inferred)."""
    if cfg.data == "phantoms":
        if loaded is None:
            raise ConfigError("segmentation.data=phantoms needs the loaded phantom dataset")
        data = from_loaded(loaded, cfg.max_train, cfg.max_eval)
    elif cfg.data == "phantoms3d":
        data = phantom_volumes(*cfg.volumes, size=cfg.volume_size, seed=cfg.seed)
    else:
        if not cfg.folder:
            raise ConfigError("segmentation.data=folder needs segmentation.folder")
        data = load_segmentation_folder(cfg.folder, cfg.num_classes)
    if cfg.num_classes is not None:
        data = replace(data, num_classes=cfg.num_classes)
    return data


@dataclass
class TrainedSegmenter:
    model: PixelSpaceSegmenter
    meta: dict[str, Any]
    fit: FitResult


def validate_seg_data(data: SegData, cfg: SegmentationConfig,
                      min_class_fraction: float = 0.1) -> ValidationReport:
    """The project's Great Expectations suite on image/mask data: image range/shape/NaN, mask
    shape, integer values in [0, num_classes), foreground fraction, duplicates, and the balance
    of images with/without foreground (label 1/0). Stop on hard failures with
    ``raise_if_failed(report, data.names)`` (names the failing files of folder data)."""
    report = validate_dataset(validation_splits(data), num_classes=2, expected_shape=None,
                              min_class_fraction=min_class_fraction,
                              num_mask_classes=data.num_classes,
                              max_foreground_fraction=cfg.max_foreground_fraction)
    return replace(report, dataset_name=data.name, dataset_version=data.version,
                   class_names=["no_foreground", "foreground"])


def train_segmenter(cfg: SegmentationConfig, data: SegData,
                    callbacks: Sequence[Callback] = (),
                    adversarial: SegAdversarialTraining | None = None) -> TrainedSegmenter:
    """Seeded segmenter (normalisation from the training split) fitted on ``train``, selected
    on ``val`` (best clean ``val_dice``). With ``adversarial`` every training batch is replaced
    by SegPGD examples (the classifiers' :class:`AdversarialBatches` with a dense attack)."""
    seed_everything(cfg.seed)
    train = data.splits["train"]
    factor = 2 ** (len(cfg.channels) - 1)
    spatial = tuple(int(side) for side in train.images.shape[2:])
    if any(side % factor for side in spatial):
        raise ConfigError(f"segmentation.channels={list(cfg.channels)} halves the image "
                          f"{len(cfg.channels) - 1} time(s), so every side must be divisible by "
                          f"{factor}; {data.name} images are {spatial} (pad or resample them, "
                          f"or use fewer levels)")
    axes = (0, *range(2, train.images.ndim))
    mean = train.images.mean(axis=axes).astype(float).tolist()
    std = np.maximum(train.images.std(axis=axes), 1e-3).astype(float).tolist()
    net = build_segmenter(cfg.model, data.spatial_dims, data.in_channels, data.num_classes,
                          tuple(cfg.channels), mean, std)
    transform = None if adversarial is None else AdversarialBatches(
        adversarial.eps, adversarial.step_size, adversarial.steps, cfg.seed, attack_cls=SegPGD)
    module = SegmenterModule(net, data.num_classes, lr=cfg.lr, batch_transform=transform)
    fit = fit_segmenter(module, train, data.splits["val"], cfg.epochs, cfg.batch_size, cfg.seed,
                        callbacks)
    meta = {"name": cfg.model, "spatial_dims": data.spatial_dims, "in_channels": data.in_channels,
            "num_classes": data.num_classes, "channels": list(cfg.channels), "dataset": data.name,
            "data_version": data.version, "best_epoch": fit.best_epoch, "seed": cfg.seed,
            "defense": "none" if adversarial is None else "pgd_at"} | (
        {} if adversarial is None else {"at_eps": adversarial.eps, "at_steps": adversarial.steps})
    return TrainedSegmenter(net, meta, fit)


def evaluate_segmenter(model: torch.nn.Module, split: SegSplit, num_classes: int,
                       prefix: str = "test_") -> dict[str, float]:
    """Dice/IoU/HD95 per class of the model on a split."""
    pred = predict_masks(model, torch.from_numpy(split.images))
    return segmentation_metrics(pred, torch.from_numpy(split.masks), num_classes, prefix=prefix)


@dataclass
class SegAttackResult:
    """One attack: ``images``/``adversarial`` (N, C, *S), true ``masks`` and ``targets``
    (N, *S; targets = masks for untargeted), ``indices`` into the test split, predictions
    before/after (N, *S), metrics (see :func:`attack_metrics`; plus ``dice_noise``, the Dice
    under random noise of the same norm, size and region)."""

    spec: SegAttackConfig
    indices: np.ndarray
    images: torch.Tensor
    adversarial: torch.Tensor
    masks: torch.Tensor
    targets: torch.Tensor
    pred_clean: torch.Tensor
    pred_adv: torch.Tensor
    metrics: dict[str, float]


def attack_inputs(spec: SegAttackConfig, test: SegSplit,
                  n: int) -> tuple[np.ndarray, np.ndarray]:
    """Which test images an attack runs on, and their target masks.

    untargeted: the first ``n`` images, target = truth; erase: the first ``n`` images with a
    lesion, target = background; inject: the first ``n`` without a lesion, target = the lesion
    mask of a lesion image (cycled).
    """
    has = test.masks.reshape(len(test), -1).max(1) > 0
    if spec.kind == "untargeted":
        idx = np.arange(min(n, len(test)))
        return idx, test.masks[idx]
    if spec.kind == "erase":
        idx = np.flatnonzero(has)[:n]
        if not len(idx):
            raise ConfigError(f"attack {spec.name!r} (erase) needs test images with a lesion; "
                              f"none of the {len(test)} test masks has foreground")
        return idx, np.zeros_like(test.masks[idx])
    idx, donors = np.flatnonzero(~has)[:n], np.flatnonzero(has)
    if not len(donors) or not len(idx):
        raise ConfigError(f"attack {spec.name!r} (inject) needs test images both with and "
                          f"without a lesion; {int(has.sum())} of {len(test)} have one")
    return idx, test.masks[donors[np.arange(len(idx)) % len(donors)]]


def attack_metrics(spec_kind: str, images: torch.Tensor, adv: torch.Tensor, masks: torch.Tensor,
                   targets: torch.Tensor, pred_clean: torch.Tensor, pred_adv: torch.Tensor,
                   num_classes: int, overlap: float = 0.5) -> dict[str, float]:
    """Dice before/after (foreground, vs the truth), target Dice and success rate (targeted),
    lesions erased/forged (connected components found with >= ``overlap`` of their pixels),
    perturbation norms and SSIM."""
    before = segmentation_metrics(pred_clean, masks, num_classes)
    after = segmentation_metrics(pred_adv, masks, num_classes)
    norms = perturbation_norms(adv - images)
    out = {"n_examples": float(images.shape[0]),
           **{f"{norm}_{stat}": float(getattr(norms[norm], stat)()) for norm, stat in (
               ("linf", "max"), ("linf", "mean"), ("l2", "mean"), ("l2", "max"), ("l0", "mean"))},
           "ssim_mean": float(ssim(images, adv).mean())}
    if spec_kind in ("untargeted", "erase"):  # inject images hold no true lesion: no Dice
        out |= {"dice_clean": before["dice"], "dice_adv": after["dice"],
                "iou_adv": after["iou_lesion"], "hd95_adv": after["hd95_lesion"]}
        total, found_clean = lesion_hits(pred_clean, masks, overlap)
        _, found_adv = lesion_hits(pred_adv, masks, overlap)
        out |= {"lesions": float(total), "lesions_found_clean": float(found_clean),
                "lesions_found_adv": float(found_adv),
                "erased_fraction": fraction(max(found_clean - found_adv, 0), found_clean)}
    if spec_kind != "untargeted":
        td = target_dice(pred_adv, targets, num_classes)
        out |= {"target_dice": float(td.mean()),
                "target_success_rate": float((td >= SUCCESS_DICE).float().mean())}
    if spec_kind == "inject":
        total, forged = lesion_hits(pred_adv, targets, overlap)
        out |= {"target_lesions": float(total), "forged_fraction": fraction(forged, total)}
    return out


def run_attack(model: torch.nn.Module, spec: SegAttackConfig, test: SegSplit, n: int,
               num_classes: int, seed: int = 0, overlap: float = 0.5) -> SegAttackResult:
    """Run ``spec`` on up to ``n`` test images (see :func:`attack_inputs`) and score it."""
    idx, targets_np = attack_inputs(spec, test, n)
    images = torch.from_numpy(np.ascontiguousarray(test.images[idx])).float()
    masks = torch.from_numpy(np.ascontiguousarray(test.masks[idx])).long()
    targets = torch.from_numpy(np.ascontiguousarray(targets_np)).long()
    region = None if spec.region_margin is None else dilate_region(
        targets if spec.kind == "inject" else masks, spec.region_margin)
    targeted = spec.kind != "untargeted"  # erase/inject
    if spec.method == "fgsm":
        attack: Attack = SegFGSM(model, eps=spec.eps, norm=spec.norm, targeted=targeted,
                                 seed=seed, scale=spec.scale)
    else:
        alpha = spec.alpha if spec.alpha is not None else spec.eps / 8
        attack = SegPGD(model, eps=spec.eps, alpha=alpha, steps=spec.steps, norm=spec.norm,
                        targeted=targeted, seed=seed, scale=spec.scale)
    adv = attack(images, targets, region=region)
    pred_clean, pred_adv = predict_masks(model, images), predict_masks(model, adv)
    metrics = attack_metrics(spec.kind, images, adv, masks, targets, pred_clean, pred_adv,
                             num_classes, overlap)
    pred_noise = predict_masks(model, random_perturbation(images, spec.eps, spec.norm, seed,
                                                          region, spec.scale))
    if spec.kind != "inject":
        metrics["dice_noise"] = segmentation_metrics(pred_noise, masks, num_classes)["dice"]
    if spec.kind != "untargeted":
        metrics["target_dice_noise"] = float(target_dice(pred_noise, targets, num_classes).mean())
    metrics |= {"epsilon": spec.eps, "seconds": attack.last_stats.seconds
                if attack.last_stats else float("nan")}
    return SegAttackResult(spec, idx, images, adv, masks, targets, pred_clean, pred_adv, metrics)


def transfer_metrics(model: torch.nn.Module, result: SegAttackResult, num_classes: int,
                     overlap: float = 0.5) -> dict[str, float]:
    """Score ``model`` on adversarial images crafted against another segmenter (a transfer,
    black-box attack): :func:`attack_metrics` with ``model``'s predictions on the clean and
    the adversarial images of ``result``. On the source model itself it reproduces the
    attack's own metrics."""
    r = result
    return attack_metrics(r.spec.kind, r.images, r.adversarial, r.masks, r.targets,
                          predict_masks(model, r.images), predict_masks(model, r.adversarial),
                          num_classes, overlap)
