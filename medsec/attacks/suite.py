"""The attack stage's core: run the configured suite of evasion attacks against one classifier.

The suite is three steps, so that each attack spec can run on its own (one Prefect task each,
``tasks/attack.py``); :func:`run_suite` runs them in a row:

1. :func:`start_suite`: check the victim on the first ``attack.n_examples`` test images and
   record its clean predictions (a :class:`SuiteResult` without points);
2. :func:`medsec.attacks.runner.run_spec` for every configured spec (independent of each
   other: any order gives the same points);
3. :func:`finish_suite` with every spec's points, in config order: the worst case per linf
   epsilon (robust only if correct before and after *every* linf attack at that epsilon),
   gradient-masking flags, the transfer attacks (crafted on a surrogate, scored on the
   victim) and the image-scaling attack on a ``resize -> classifier`` pipeline.

No Prefect, no MLflow, no top-level config: the flow (``flows/attack.py``) logs and writes
what this returns.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from medsec.attacks.base import predictions
from medsec.attacks.config import AttackConfig, ImageScalingConfig
from medsec.attacks.image_scaling import ImageScalingAttack, ResizeThenClassify, resize
from medsec.attacks.results import AttackPoint, ScalingDemo, SuiteResult
from medsec.attacks.runner import Log, quiet, run_spec, run_transfer
from medsec.attacks.scoring import masking_flags, worst_case
from medsec.data.types import ImageDataset
from medsec.metrics.robustness import robust_correct
from medsec.models.checks import check_classifier
from medsec.training.predict import predict_logits


def start_suite(model: nn.Module, test: ImageDataset, cfg: AttackConfig,
                surrogate: nn.Module | None = None, log: Log = quiet) -> SuiteResult:
    """The first ``cfg.n_examples`` images of ``test`` with the victim's clean predictions.

    Raises ValueError (:func:`medsec.models.checks.check_classifier`) for a victim or
    ``surrogate`` that returns probabilities or a dense output, images outside [0, 1] or
    labels outside its classes, and when ``cfg.transfer`` is set without a ``surrogate``.
    """
    subset = test.head(cfg.n_examples)
    images, labels = (np.ascontiguousarray(a) for a in (subset.images, subset.labels))
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    num_classes = check_classifier(model, x, y)
    if cfg.transfer is not None:
        if surrogate is None:
            raise ValueError("attack.transfer is configured: pass the trained surrogate model")
        check_classifier(surrogate, x, y)
    clean_pred = predictions(predict_logits(model, x, cfg.batch_size), y).numpy()
    result = SuiteResult(images, labels, np.arange(len(subset), dtype=np.int64), clean_pred,
                         num_classes)
    log(f"{len(subset)} test images, clean accuracy {result.clean_acc:.3f}")
    return result


def finish_suite(result: SuiteResult, points: list[AttackPoint], model: nn.Module,
                 cfg: AttackConfig, surrogate: nn.Module | None = None,
                 log: Log = quiet) -> SuiteResult:
    """Add ``points`` (every spec's, in config order), the worst case, the gradient-masking
    flags, the transfer rows (``surrogate`` needed when ``cfg.transfer`` is set) and the
    image-scaling demo to ``result``; returns it."""
    result.points = list(points)
    result.worst_case = worst_case(result.points, result.labels, result.clean_pred)
    result.masking_flags = masking_flags(result.points, len(result.labels))
    for flag in result.masking_flags:
        log(f"gradient masking? {flag}")
    x, y = result.tensors()
    if cfg.transfer is not None:
        assert surrogate is not None, "checked by start_suite"
        specs = {spec.id: spec for spec in cfg.attacks}
        for ident in cfg.transfer.attacks:
            result.transfer += run_transfer(specs[ident], model, surrogate, result, cfg, log)
    if cfg.image_scaling.enabled:
        clean_pred = torch.from_numpy(result.clean_pred)
        result.image_scaling = scaling_demo(model, x, y, clean_pred, cfg.image_scaling)
        if result.image_scaling is not None:
            log(f"image scaling: success {result.image_scaling.metrics['success_rate']:.3f}")
    return result


def scaling_demo(model: nn.Module, images: Tensor, labels: Tensor, clean_pred: Tensor,
                 cfg: ImageScalingConfig) -> ScalingDemo | None:
    """Image-scaling attack on ``resize(mode) -> model``: test images upscaled to
    ``source_size`` are perturbed to downscale into a correctly classified test image of
    another class (multi-hot labels (N, L): another set of findings; success = every finding
    of the target predicted). None when the test examples hold no such pair."""
    native = tuple(int(s) for s in images.shape[2:])
    if cfg.source_size <= max(native):
        raise ValueError(f"attack.image_scaling.source_size={cfg.source_size} must exceed the "
                         f"model's input size {native}")
    correct = robust_correct(labels, clean_pred).nonzero().squeeze(1)
    sources, targets = [], []
    for i in correct.tolist():
        others = correct[~robust_correct(labels[correct], labels[i].expand_as(labels[correct]))]
        if others.numel():
            sources.append(i)
            targets.append(int(others[len(sources) % others.numel()]))
        if len(sources) == cfg.n_examples:
            break
    if not sources:
        return None
    src_idx, tgt_idx = torch.tensor(sources), torch.tensor(targets)
    source = resize(images[src_idx], cfg.source_size, "bilinear").clamp(0.0, 1.0)
    target = images[tgt_idx]
    attack = ImageScalingAttack(size=native, mode=cfg.mode, steps=cfg.steps)
    result = attack(source, target)
    pipeline = ResizeThenClassify(model, native, cfg.mode)
    pred = predictions(predict_logits(pipeline, result.adv), labels)
    source_pred = predictions(predict_logits(pipeline, source), labels)
    metrics = result.as_dict() | {
        "n_pairs": float(len(sources)),
        "success_rate": float(robust_correct(labels[tgt_idx], pred).float().mean()),
        "pipeline_clean_acc": float(robust_correct(labels[src_idx], source_pred).float().mean()),
        "source_size": float(cfg.source_size),
    }
    return ScalingDemo(metrics, source.numpy(), result.adv.float().numpy(), target.numpy(),
                       attack.downscale(result.adv).float().numpy(), labels[src_idx].numpy(),
                       labels[tgt_idx].numpy(), pred.numpy(), src_idx.numpy(), tgt_idx.numpy())


def run_suite(model: nn.Module, test: ImageDataset, cfg: AttackConfig,
              train: ImageDataset | None = None, surrogate: nn.Module | None = None,
              log: Log | None = None) -> SuiteResult:
    """Run the configured suite on the first ``cfg.n_examples`` images of ``test``.

    Args:
        model: the victim, pixel-space images (N, C, H, W) in [0, 1] -> logits (N, K).
        test: test split (images float32 (N, C, H, W) in [0, 1], labels (N,)).
        cfg: the ``attack:`` config section.
        train: training split (needed by ``uap``, fitted on its first ``uap_fit_size``).
        surrogate: model the ``transfer`` attacks are crafted on (needed when configured).
        log: progress callback, one line per attack and epsilon.

    Raises ValueError as :func:`start_suite` does.
    """
    say = log or quiet
    result = start_suite(model, test, cfg, surrogate, say)
    points = [p for spec in cfg.attacks for p in run_spec(spec, model, result, cfg, train, say)]
    return finish_suite(result, points, model, cfg, surrogate, say)
