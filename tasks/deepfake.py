"""DeepFake tasks: thin Prefect wrappers over :mod:`medsec.deepfakes`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import task
from torch import nn

from medsec.config import MedSecConfig
from medsec.data.types import ImageDataset, LoadedDataset
from medsec.deepfakes.config import GanConfig
from medsec.deepfakes.dataset import load_fake_dataset, write_fake_dataset
from medsec.deepfakes.evaluate import RealReference
from medsec.deepfakes.gan import TrainedGan, train_gan
from medsec.deepfakes.networks import save_generator
from medsec.deepfakes.pipeline import TamperReport
from medsec.errors import DataError
from medsec.stages import deepfake as stage
from medsec.training.checkpoint import load_classifier
from tasks.tracking import log_metrics

if TYPE_CHECKING:
    from medsec.privacy.canary_audit import CanaryAudit


@task(name="load-victim")
def load_victim_task(data: LoadedDataset, checkpoint: str | Path) -> nn.Module:
    """The project's trained classifier (the victim, and the feature network of the metrics)."""
    model, meta = load_classifier(checkpoint)
    if meta.get("data_version") != data.version:
        raise DataError(f"victim checkpoint {checkpoint} was trained on {meta.get('dataset')} "
                        f"version {meta.get('data_version')}, but the configured data is "
                        f"{data.name} version {data.version}: run the train stage first")
    return model


@task(name="train-generator")
def train_generator_task(train: ImageDataset, num_classes: int, gan_cfg: GanConfig,
                         name: str) -> TrainedGan:
    """Train a conditional GAN; its per-epoch losses go to MLflow as ``{name}_d_loss`` etc."""
    gan = train_gan(train, num_classes, gan_cfg)
    for row in gan.history:
        log_metrics({f"{name}_{k}": v for k, v in row.items() if k != "epoch"},
                    step=int(row["epoch"]))
    return gan


@task(name="publish-deepfake-dataset")
def publish_dataset_task(cfg: MedSecConfig, data: LoadedDataset, ref: RealReference,
                         gan: TrainedGan, directory: Path, checkpoint: Path
                         ) -> dict[str, ImageDataset]:
    """Save the generator checkpoint and write the DeepFake dataset; returns its splits."""
    meta: dict[str, Any] = {
        "generator": "class-conditional DCGAN (MONAI Generator + Discriminator)",
        "dataset": data.name, "data_version": data.version, "class_names": list(data.class_names),
        "gan_seed": gan.seed, "epochs": len(gan.history), "train_images": len(ref.train),
        "private": False,
    }
    save_generator(checkpoint, gan.generator, meta)
    dcfg = cfg.deepfake.dataset
    npz, _ = write_fake_dataset(directory, gan.generator, checkpoint, meta, dcfg.n_per_class,
                                dcfg.sample_seed)
    return load_fake_dataset(npz, list(data.class_names))


@task(name="generator-report")
def generator_report_task(cfg: MedSecConfig, gan: TrainedGan, ref: RealReference,
                          splits: dict[str, ImageDataset] | None = None,
                          prefix: str = "") -> dict[str, float]:
    return stage.generator_report(cfg, gan.generator, ref, splits, prefix)


@task(name="deepfake-detector")
def detector_task(cfg: MedSecConfig, ref: RealReference, seen: TrainedGan,
                  unseen: TrainedGan) -> dict[str, float]:
    return stage.detector_report(cfg, ref, seen.generator, unseen.generator)


@task(name="tamper")
def tamper_task(cfg: MedSecConfig, ref: RealReference, victim: nn.Module) -> TamperReport:
    return stage.tamper_report(cfg, ref, victim)


@task(name="private-generator")
def private_generator_task(cfg: MedSecConfig, ref: RealReference, epsilon: float
                           ) -> tuple[dict[str, float], TrainedGan]:
    return stage.private_report(cfg, ref, epsilon)


@task(name="private-generator-canary-audit")
def private_canary_task(cfg: MedSecConfig, ref: RealReference, epsilon: float
                        ) -> CanaryAudit | None:
    """One-run DP audit of the DP-GAN at ``epsilon`` (``deepfake.canary``; None when off)."""
    return stage.canary_audit(cfg, ref, epsilon)
