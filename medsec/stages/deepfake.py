"""Config -> the DeepFake stage's steps (:mod:`medsec.deepfakes.pipeline`): the ``deepfake``
section and the classifier recipe of its classifiers (train-on-synthetic, detectors, the
attacker's surrogate)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from medsec.config import MedSecConfig
from medsec.data.types import ImageDataset, LoadedDataset
from medsec.deepfakes import pipeline
from medsec.deepfakes.evaluate import RealReference
from medsec.deepfakes.gan import TrainedGan
from medsec.deepfakes.networks import ConditionalGenerator
from medsec.stages import classifier
from medsec.training.config import ClassifierRecipe

if TYPE_CHECKING:
    from medsec.privacy.canary_audit import CanaryAudit


def recipe(cfg: MedSecConfig) -> ClassifierRecipe:
    """``cfg``'s classifier recipe with no thread setting of its own: the stage's thread count
    (``deepfake.num_threads``, else ``train.num_threads``) stays in force."""
    base = classifier.recipe(cfg)
    return base.model_copy(update={"train": base.train.model_copy(update={"num_threads": None})})


def task_view(data: LoadedDataset, victim: nn.Module) -> tuple[LoadedDataset, nn.Module, bool]:
    """The data and victim the stage runs on: multi-label data (several findings per image)
    as the binary "any finding" task, the victim through its exact any-finding probability
    (:mod:`medsec.deepfakes.any_finding`); single-label unchanged. ``converted`` says which."""
    from medsec.deepfakes.any_finding import any_finding_view

    return any_finding_view(data, victim)


def real_reference(cfg: MedSecConfig, data: LoadedDataset, feature_net: nn.Module) -> RealReference:
    return pipeline.real_reference(cfg.deepfake, data, feature_net)


def generator_report(cfg: MedSecConfig, generator: ConditionalGenerator, ref: RealReference,
                     splits: dict[str, ImageDataset] | None = None, prefix: str = ""
                     ) -> dict[str, float]:
    return pipeline.generator_report(cfg.deepfake, recipe(cfg), generator, ref, splits, prefix)


def detector_report(cfg: MedSecConfig, ref: RealReference, seen: ConditionalGenerator,
                    unseen: ConditionalGenerator) -> dict[str, float]:
    return pipeline.detector_report(cfg.deepfake, recipe(cfg), ref, seen, unseen)


def tamper_report(cfg: MedSecConfig, ref: RealReference, victim: nn.Module
                  ) -> pipeline.TamperReport:
    return pipeline.tamper_report(cfg.deepfake, recipe(cfg), ref, victim)


def private_report(cfg: MedSecConfig, ref: RealReference, epsilon: float
                   ) -> tuple[dict[str, float], TrainedGan]:
    return pipeline.private_report(cfg.deepfake, recipe(cfg), ref, epsilon)



def canary_audit(cfg: MedSecConfig, ref: RealReference, epsilon: float) -> CanaryAudit | None:
    """One-run DP audit of the DP-GAN at target ``epsilon`` (``deepfake.canary``; None when
    disabled): see :func:`medsec.deepfakes.pipeline.private_audit`."""
    return pipeline.private_audit(cfg.deepfake, ref, epsilon)
