"""The steps of the DeepFake stage, each composing the core modules (``medsec.stages.deepfake``
calls these; nothing here imports Prefect or MLflow).

Each step takes the ``deepfake`` section (:class:`DeepfakeConfig`) and the
:class:`ClassifierRecipe` its classifiers are trained with. Seeds: every step derives its
sampling seeds from ``dataset.sample_seed`` (fakes) and ``recipe.seed`` (classifiers), so the
same settings and data give the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from medsec.data.types import ImageDataset, LoadedDataset
from medsec.deepfakes.classify import fit_on
from medsec.deepfakes.config import DeepfakeConfig, GanConfig
from medsec.deepfakes.dataset import fake_splits
from medsec.deepfakes.detector import detection_auc, detection_split, train_detector
from medsec.deepfakes.evaluate import (
    RealReference,
    fakes_like,
    quality_metrics,
    real_baseline,
    tstr_metrics,
)
from medsec.deepfakes.gan import TrainedGan, train_gan
from medsec.deepfakes.networks import ConditionalGenerator
from medsec.deepfakes.tamper import (
    TamperResult,
    TrainedInpainter,
    tamper_metrics,
    tamper_split,
    train_inpainter,
)
from medsec.privacy.config import DPConfig
from medsec.training.config import ClassifierRecipe
from medsec.training.predict import predict_logits

if TYPE_CHECKING:
    from medsec.privacy.canary_audit import CanaryAudit

# Offsets from deepfake.dataset.sample_seed for the fakes of each purpose (disjoint latents).
SEED_QUALITY, SEED_DET_TRAIN, SEED_DET_VAL, SEED_DET_TEST, SEED_UNSEEN = 100, 200, 300, 400, 500


def real_reference(dcfg: DeepfakeConfig, data: LoadedDataset, feature_net: nn.Module
                   ) -> RealReference:
    """Generators train on ``train`` (first ``dcfg.max_train``); the ``val`` split (first
    ``dcfg.max_eval``) is the held-out reference; ``test`` is the TSTR test split."""
    return RealReference(train=data.splits["train"].head(dcfg.max_train),
                         holdout=data.splits["val"].head(dcfg.max_eval), test=data.splits["test"],
                         class_names=list(data.class_names), feature_net=feature_net)


def eps_tag(epsilon: float) -> str:
    """Metric-name form of an epsilon: 8.0 -> ``8``, 0.5 -> ``0p5``."""
    return f"{epsilon:g}".replace(".", "p").replace("-", "m")


def generator_report(
    dcfg: DeepfakeConfig, recipe: ClassifierRecipe, generator: ConditionalGenerator,
    ref: RealReference, splits: dict[str, ImageDataset] | None = None, prefix: str = "",
) -> dict[str, float]:
    """Quality, memorisation, membership and TSTR metrics of one generator (see
    :mod:`medsec.deepfakes.evaluate`); ``splits`` is its synthetic dataset (sampled when None)."""
    seed = dcfg.dataset.sample_seed
    fakes = fakes_like(generator, ref.holdout, seed + SEED_QUALITY)
    metrics = quality_metrics(fakes, ref, k=dcfg.knn_k)
    splits = splits or fake_splits(generator, dcfg.dataset.n_per_class, seed)
    metrics |= tstr_metrics(recipe, splits["train"], splits["val"], ref, dcfg.tstr_epochs,
                            recipe.seed)
    return {f"{prefix}{key}": value for key, value in metrics.items()}


def reference_metrics(victim: nn.Module, ref: RealReference) -> dict[str, float]:
    """Real-data references: ``real_test_acc`` (the real-trained victim on the test split: what
    TSTR is compared with) and ``fd_real_baseline`` (real train vs real holdout: the floor of
    the Frechet distance at this sample size)."""
    images, labels = ref.test.tensors()
    preds = predict_logits(victim, images).argmax(1)
    return {"real_test_acc": float((preds == labels).float().mean())} | real_baseline(ref)


def detector_report(
    dcfg: DeepfakeConfig, recipe: ClassifierRecipe, ref: RealReference,
    seen: ConditionalGenerator, unseen: ConditionalGenerator,
) -> dict[str, float]:
    """Real-vs-fake detector trained on fakes of ``seen``; AUROC on held-out fakes of ``seen``
    (``detector_auc_seen``) and of ``unseen`` (``detector_auc_unseen``), vs real test images."""
    seed = dcfg.dataset.sample_seed
    real_train = ref.train.head(dcfg.detector.n_train)
    train = detection_split(real_train.images,
                            fakes_like(seen, real_train, seed + SEED_DET_TRAIN), recipe.seed)
    val = detection_split(ref.holdout.images,
                          fakes_like(seen, ref.holdout, seed + SEED_DET_VAL), recipe.seed)
    detector = train_detector(recipe, train, val, dcfg.detector.epochs, recipe.seed)
    real_test = ref.test.images
    return {
        "detector_auc_seen": detection_auc(
            detector, real_test, fakes_like(seen, ref.test, seed + SEED_DET_TEST)),
        "detector_auc_unseen": detection_auc(
            detector, real_test, fakes_like(unseen, ref.test, seed + SEED_UNSEEN)),
    }


@dataclass
class TamperReport:
    metrics: dict[str, float]
    result: TamperResult  # the tampered test images
    before: torch.Tensor  # victim's predictions (N,) on the originals
    after: torch.Tensor  # ... and on the tampered images
    inpainter: TrainedInpainter


def tamper_report(dcfg: DeepfakeConfig, recipe: ClassifierRecipe, ref: RealReference,
                  victim: nn.Module) -> TamperReport:
    """Train the attacker's surrogate and inpainter on ``ref.train``, tamper the first
    ``tamper.n_images`` test images towards the other diagnosis, measure the victim's flips,
    and train/evaluate a real-vs-tampered detector (``tamper_detector_auc``)."""
    tcfg = dcfg.tamper
    k = len(ref.class_names)
    surrogate = None
    if tcfg.evidence_weight > 0:
        surrogate = fit_on(recipe, ref.train, ref.holdout, ref.class_names, "surrogate",
                           seed=tcfg.surrogate_seed)
    trained = train_inpainter(ref.train, k, tcfg, surrogate, tcfg.surrogate_seed)
    seed = dcfg.dataset.sample_seed
    result = tamper_split(trained, ref.test, tcfg.dilate, tcfg.n_images, seed)
    metrics = tamper_metrics(victim, result, k)
    if surrogate is not None:
        metrics["tamper_surrogate_flip_rate"] = tamper_metrics(surrogate, result, k)[
            "tamper_flip_rate"]
    # Real vs tampered: pairs of originals and their tampered copies.
    n_train = dcfg.detector.n_train
    tr = tamper_split(trained, ref.train, tcfg.dilate, n_train or len(ref.train), seed + 1)
    va = tamper_split(trained, ref.holdout, tcfg.dilate, len(ref.holdout), seed + 2)
    detector = train_detector(recipe, detection_split(tr.originals, tr.tampered, recipe.seed),
                              detection_split(va.originals, va.tampered, recipe.seed),
                              dcfg.detector.epochs, recipe.seed, "tamper-detection")
    metrics["tamper_detector_auc"] = detection_auc(detector, result.originals, result.tampered)
    before = predict_logits(victim, result.originals).argmax(1)
    after = predict_logits(victim, result.tampered).argmax(1)
    return TamperReport(metrics, result, before, after, trained)


def private_settings(dcfg: DeepfakeConfig, epsilon: float) -> tuple[DPConfig, GanConfig]:
    """The DP-GAN at target ``epsilon``: its discriminator's DP-SGD settings (``deepfake.dp``)
    and the GAN config with the DP (expected Poisson) batch size."""
    dp = dcfg.dp
    settings = DPConfig(enabled=True, target_epsilon=epsilon, delta=dp.delta,
                        max_grad_norm=dp.max_grad_norm, accountant=dp.accountant)
    return settings, dcfg.gan.model_copy(update={"batch_size": dp.batch_size})


def private_audit(dcfg: DeepfakeConfig, ref: RealReference, epsilon: float
                  ) -> CanaryAudit | None:
    """One-run DP audit (``deepfake.canary``; None when disabled) of the DP-GAN at target
    ``epsilon``: one extra GAN training with the same settings as :func:`private_report`
    (``canary.epochs`` overrides ``dp.epochs``) and ``canary.num_canaries`` gradient canaries
    in the discriminator; the audit's ``epsilon`` is that run's accountant epsilon."""
    canary = dcfg.canary
    if not canary.enabled:
        return None
    from medsec.deepfakes.canary import audit_gan

    settings, gan_cfg = private_settings(dcfg, epsilon)
    audit, _ = audit_gan(ref.train, len(ref.class_names), gan_cfg, settings,
                         canary.num_canaries, canary.guesses, canary.confidence, canary.seed,
                         epochs=canary.epochs or dcfg.dp.epochs)
    return audit


def private_report(dcfg: DeepfakeConfig, recipe: ClassifierRecipe, ref: RealReference,
                   epsilon: float) -> tuple[dict[str, float], TrainedGan]:
    """A GAN whose discriminator is trained with DP-SGD at ``epsilon``; its metrics (see
    :func:`generator_report`) prefixed ``dp_eps{tag}_`` plus the epsilon actually spent."""
    settings, gan_cfg = private_settings(dcfg, epsilon)
    gan = train_gan(ref.train, len(ref.class_names), gan_cfg, dp=settings, epochs=dcfg.dp.epochs)
    prefix = f"dp_eps{eps_tag(epsilon)}_"
    metrics = generator_report(dcfg, recipe, gan.generator, ref, prefix=prefix)
    metrics |= {f"{prefix}epsilon": float(gan.epsilon or 0.0), f"{prefix}delta": gan.delta,
                f"{prefix}noise_multiplier": (gan.dp_params or {}).get("dp_noise_multiplier")}
    return metrics, gan
