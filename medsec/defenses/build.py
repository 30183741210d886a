"""Configured defense name -> built :class:`~medsec.defenses.base.Defense`.

Training-time defenses train through :func:`medsec.training.job.train_classifier` (via
:func:`~medsec.defenses.training.train_defended`); input transformations wrap the undefended
model; detectors are fitted on the training split and calibrated on the validation split;
smoothing wraps the undefended or a noise-trained base classifier. One
:class:`BuildContext` per run shares data tensors and MagNet autoencoders between defenses.

Multi-label data (multi-hot labels): every defense applies except those in
:data:`MULTILABEL_UNSUPPORTED`, which the defense stage skips with a record
(:func:`medsec.stages.defense.applicable`); :func:`check_multilabel` refuses them here too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn

from medsec.data.types import LoadedDataset
from medsec.defenses import config as dc
from medsec.defenses import transforms as tf
from medsec.defenses.autoencoder import PixelAutoEncoder, Reformer, train_autoencoder
from medsec.defenses.base import Defense, require_classifier
from medsec.defenses.detectors import (
    Detector,
    MagNetDetector,
    MahalanobisDetector,
    SqueezeDetector,
)
from medsec.defenses.smoothing import RandomizedSmoothing
from medsec.defenses.training import (
    AdversarialBatches,
    DefendedTraining,
    DistillationLoss,
    NoiseBatches,
    TemperatureLoss,
    TradesLoss,
    train_defended,
)
from medsec.errors import ConfigError
from medsec.training.config import ClassifierRecipe
from medsec.training.job import FitStrategy, plain_fit


@dataclass
class BuildContext:
    """Everything builders share: the classifier ``recipe`` (network, training, seed, split
    limits) and fit ``strategy`` of defended training, the scoring settings ``eval``, data, the
    undefended model, training callbacks."""

    recipe: ClassifierRecipe
    eval: dc.DefenseEvalConfig
    data: LoadedDataset
    baseline: nn.Module
    callbacks: Sequence[Callback] = ()
    strategy: FitStrategy = plain_fit
    _autoencoders: dict[tuple, tuple[PixelAutoEncoder, float]] = field(default_factory=dict)

    def split(self, name: str) -> tuple[Tensor, Tensor]:
        """Images (N, C, H, W) in [0, 1] and labels (N,) (multi-hot (N, L) for multi-label
        data) of a split (dataset limits applied)."""
        return self.recipe.split(self.data, name).tensors()

    def autoencoder(self, p: dc.AutoEncoderParams) -> tuple[PixelAutoEncoder, float]:
        """MagNet autoencoder for these parameters (trained once per run) and its seconds."""
        key = (tuple(p.channels), p.epochs, p.lr, p.noise)
        if key not in self._autoencoders:
            start = time.perf_counter()
            ae = train_autoencoder(self.split("train")[0], p.channels, p.epochs, p.lr, p.noise,
                                   self.recipe.train.batch_size, self.recipe.seed)
            self._autoencoders[key] = (ae, time.perf_counter() - start)
        return self._autoencoders[key]


def undefended(model: nn.Module, name: str = "undefended") -> Defense:
    """The baseline as a :class:`Defense` (adaptive attack: PGD on the margin loss)."""
    return Defense(name=name, kind="none", model=model, attack_model=model, adaptive_model=model)


MULTILABEL_UNSUPPORTED: dict[str, str] = {
    "mahalanobis": "fits one Gaussian per class and multi-hot labels give no class per image",
    "smoothing": "certifies the majority class of the noisy votes (Cohen et al.), which is not "
                 "defined for several findings per image",
}
"""Defenses that need one class per image, and why (skipped on multi-label data)."""


def check_multilabel(specs: Sequence[dc.DefenseSpec], multilabel: bool) -> None:
    """ConfigError naming ``defense.defenses[i].name`` of the first configured defense in
    :data:`MULTILABEL_UNSUPPORTED` when the data is ``multilabel``; nothing otherwise."""
    if not multilabel:
        return
    for i, spec in enumerate(specs):
        if spec.name in MULTILABEL_UNSUPPORTED:
            raise ConfigError(f"defense.defenses[{i}].name: {spec.name} "
                              f"{MULTILABEL_UNSUPPORTED[spec.name]}; remove it for multi-label "
                              "data (see README, Your own data)")


def build_defense(spec: dc.DefenseSpec, ctx: BuildContext) -> Defense:
    """Build (train / fit / wrap) the defense ``spec`` on top of ``ctx.baseline``."""
    check_multilabel([spec], ctx.data.task == "multilabel")
    num_classes = require_classifier(ctx.baseline, ctx.data.image_shape, spec.key)
    defense = BUILDERS[spec.name](spec.options(), ctx, num_classes)
    defense.name = spec.key
    defense.meta = {**defense.meta, "defense": spec.key, "defense_name": spec.name,
                    "defense_params": dict(spec.params)}
    return defense


# ------------------------------------------------------------------------ training-time


def _trained(p: Any, ctx: BuildContext, hooks: DefendedTraining) -> tuple[nn.Module, dict, float]:
    hooks.epochs = p.epochs
    if p.init == "baseline":
        hooks.init_state = {k: v.clone() for k, v in ctx.baseline.state_dict().items()}
    result = train_defended(ctx.recipe, ctx.data, hooks, ctx.callbacks, ctx.strategy)
    return result.model, dict(result.meta), result.fit.seconds


def _training_defense(p: Any, ctx: BuildContext, hooks: DefendedTraining) -> Defense:
    model, meta, seconds = _trained(p, ctx, hooks)
    return Defense(name="", kind="training", model=model, attack_model=model,
                   adaptive_model=model, classifier=model, meta=meta, train_seconds=seconds)


def _pgd_at(p: dc.PGDTrainingParams, ctx: BuildContext, k: int) -> Defense:
    batches = AdversarialBatches(p.eps, p.alpha or p.eps / 4, p.steps, ctx.recipe.seed)
    return _training_defense(p, ctx, DefendedTraining(batch_transform=batches))


def _fast_fgsm_at(p: dc.FastFGSMParams, ctx: BuildContext, k: int) -> Defense:
    batches = AdversarialBatches.fast_fgsm(p.eps, p.alpha, ctx.recipe.seed)
    return _training_defense(p, ctx, DefendedTraining(batch_transform=batches))


def _trades(p: dc.TradesParams, ctx: BuildContext, k: int) -> Defense:
    loss = TradesLoss(p.eps, p.alpha or p.eps / 4, p.steps, p.beta, ctx.recipe.seed)
    return _training_defense(p, ctx, DefendedTraining(loss_fn=loss))


def _gaussian_noise(p: dc.NoiseTrainingParams, ctx: BuildContext, k: int) -> Defense:
    return _training_defense(p, ctx, DefendedTraining(batch_transform=NoiseBatches(p.sigma)))


def _distillation(p: dc.DistillationParams, ctx: BuildContext, k: int) -> Defense:
    teacher, _, t_seconds = _trained(p, ctx, DefendedTraining(loss_fn=TemperatureLoss(
        p.temperature)))
    defense = _training_defense(p, ctx, DefendedTraining(loss_fn=DistillationLoss(
        teacher, p.temperature)))
    defense.train_seconds += t_seconds
    return defense


# ------------------------------------------------------------------------ input transforms


def transform_defense(model: nn.Module, transform: nn.Module, seconds: float = 0.0) -> Defense:
    """``Preprocessed(model, transform)``, attacked adaptively through BPDA."""
    wrapped = tf.Preprocessed(model, transform)
    return Defense(name=getattr(transform, "name", "transform"), kind="transform",
                   model=wrapped, attack_model=wrapped, adaptive_model=wrapped.with_bpda(),
                   adaptive_attack="bpda_pgd", train_seconds=seconds)


def _bit_depth(p: dc.BitDepthParams, ctx: BuildContext, k: int) -> Defense:
    return transform_defense(ctx.baseline, tf.BitDepth(p.bits))


def _median(p: dc.MedianParams, ctx: BuildContext, k: int) -> Defense:
    return transform_defense(ctx.baseline, tf.MedianFilter(p.size))


def _jpeg(p: dc.JpegParams, ctx: BuildContext, k: int) -> Defense:
    return transform_defense(ctx.baseline, tf.JPEG(p.quality))


def _low_pass(p: dc.LowPassParams, ctx: BuildContext, k: int) -> Defense:
    return transform_defense(ctx.baseline, tf.LowPass(p.cutoff))


def _reformer(p: dc.AutoEncoderParams, ctx: BuildContext, k: int) -> Defense:
    ae, seconds = ctx.autoencoder(p)
    return transform_defense(ctx.baseline, Reformer(ae), seconds)


# ------------------------------------------------------------------------ detectors


def detector_defense(model: nn.Module, detector: Detector, seconds: float = 0.0) -> Defense:
    """``model`` guarded by a fitted and calibrated ``detector`` (detector-aware PGD)."""
    detector.require_threshold()
    return Defense(name=detector.name, kind="detector", model=model, attack_model=model,
                   adaptive_model=model, adaptive_attack="detector_aware_pgd",
                   detector=detector, train_seconds=seconds)


def _calibrated(ctx: BuildContext, detector: Detector, fpr: float, seconds: float = 0.0
                ) -> Defense:
    start = time.perf_counter()
    detector.calibrate(ctx.split("val")[0], fpr)
    return detector_defense(ctx.baseline, detector, seconds + time.perf_counter() - start)


def _mahalanobis(p: dc.MahalanobisParams, ctx: BuildContext, k: int) -> Defense:
    start = time.perf_counter()
    images, labels = ctx.split("train")
    detector = MahalanobisDetector(ctx.baseline).fit(images[: p.max_fit], labels[: p.max_fit])
    return _calibrated(ctx, detector, p.fpr, time.perf_counter() - start)


def _squeeze_detector(p: dc.SqueezeDetectorParams, ctx: BuildContext, k: int) -> Defense:
    detector = SqueezeDetector(ctx.baseline, p.bits, p.median_size,
                               multilabel=ctx.data.task == "multilabel")
    return _calibrated(ctx, detector, p.fpr)


def _magnet_detector(p: dc.MagNetDetectorParams, ctx: BuildContext, k: int) -> Defense:
    ae, seconds = ctx.autoencoder(p)
    return _calibrated(ctx, MagNetDetector(ctx.baseline, ae), p.fpr, seconds)


# ------------------------------------------------------------------------ certification


def smoothing_defense(base: nn.Module, num_classes: int, p: dc.SmoothingParams,
                      ev: dc.DefenseEvalConfig, seed: int = 0) -> Defense:
    """Randomized smoothing of ``base``: predictions by ``ev.predict_samples`` noise draws,
    the adaptive attack is EOT-PGD with ``ev.eot_samples`` draws per gradient."""
    noisy = tf.Preprocessed(base, tf.GaussianNoise(p.sigma))
    smoother = RandomizedSmoothing(base, num_classes, p.sigma, p.n0, p.n, p.alpha,
                                   ev.batch_size, seed)
    return Defense(name="smoothing", kind="certification",
                   model=tf.EOT(noisy, ev.predict_samples), attack_model=noisy,
                   adaptive_model=tf.EOT(noisy, ev.eot_samples), adaptive_attack="eot_pgd",
                   smoother=smoother)


def _smoothing(p: dc.SmoothingParams, ctx: BuildContext, k: int) -> Defense:
    if p.base == "baseline":
        return smoothing_defense(ctx.baseline, k, p, ctx.eval, ctx.recipe.seed)
    hooks = DefendedTraining(batch_transform=NoiseBatches(p.sigma), epochs=p.epochs)
    result = train_defended(ctx.recipe, ctx.data, hooks, ctx.callbacks, ctx.strategy)
    defense = smoothing_defense(result.model, k, p, ctx.eval, ctx.recipe.seed)
    defense.classifier, defense.meta = result.model, dict(result.meta)
    defense.train_seconds = result.fit.seconds
    return defense


Builder = Callable[[Any, BuildContext, int], Defense]
BUILDERS: dict[str, Builder] = {
    "pgd_at": _pgd_at, "trades": _trades, "fast_fgsm_at": _fast_fgsm_at,
    "gaussian_noise": _gaussian_noise, "distillation": _distillation,
    "bit_depth": _bit_depth, "median_filter": _median, "jpeg": _jpeg, "low_pass": _low_pass,
    "magnet_reformer": _reformer,
    "mahalanobis": _mahalanobis, "squeeze_detector": _squeeze_detector,
    "magnet_detector": _magnet_detector,
    "smoothing": _smoothing,
}
assert set(BUILDERS) == set(dc.DEFENSE_PARAMS), "every configured defense needs a builder"
