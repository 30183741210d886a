"""Prefect tasks of the segmentation stage: thin wrappers over :mod:`medsec.segmentation`."""

from __future__ import annotations

from prefect import task

from medsec.config import MedSecConfig
from medsec.data.types import LoadedDataset
from medsec.data.validation import ValidationReport
from medsec.segmentation.config import SegAdversarialTraining, SegAttackConfig, SegmentationConfig
from medsec.segmentation.data import SegData
from medsec.segmentation.job import (
    SegAttackResult,
    TrainedSegmenter,
    evaluate_segmenter,
    load_seg_data,
    run_attack,
    train_segmenter,
)
from medsec.stages import segmentation as stage
from tasks.train import MlflowEpochLogger


@task(name="validate-segmentation-data")
def validate_seg_data_task(cfg: MedSecConfig, data: SegData) -> ValidationReport:
    """Great Expectations on images and masks (see ``validate_seg_data``)."""
    return stage.validate(cfg, data)


@task(name="load-segmentation-data")
def seg_data_task(cfg: SegmentationConfig, loaded: LoadedDataset | None) -> SegData:
    return load_seg_data(cfg, loaded)


@task(name="train-segmenter")
def train_segmenter_task(cfg: SegmentationConfig, data: SegData,
                         adversarial: SegAdversarialTraining | None = None) -> TrainedSegmenter:
    """Fit the segmenter (adversarially with ``adversarial``); each epoch's ``train_loss``/
    ``val_loss``/``val_dice`` go to MLflow."""
    return train_segmenter(cfg, data, callbacks=[MlflowEpochLogger()], adversarial=adversarial)


@task(name="evaluate-segmenter")
def evaluate_segmenter_task(trained: TrainedSegmenter, data: SegData) -> dict[str, float]:
    return evaluate_segmenter(trained.model, data.splits["test"], data.num_classes)


@task(name="segmentation-attack")
def seg_attack_task(trained: TrainedSegmenter, spec: SegAttackConfig, data: SegData,
                    cfg: SegmentationConfig) -> SegAttackResult:
    return run_attack(trained.model, spec, data.splits["test"], cfg.n_attack, data.num_classes,
                      seed=cfg.seed, overlap=cfg.lesion_overlap)
