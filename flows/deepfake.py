"""DeepFake flow: generate, publish, judge, detect, tamper, and make DP synthetic data.

Reads the victim classifier (``models/classifier.pt``, the train stage's output), writes the
DeepFake dataset and generator under ``outputs/deepfakes/`` (a DVC output) and
``metrics/deepfake.json``; everything is logged to one MLflow run tagged
``medsec.stage=deepfake``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from prefect import flow

from flows.outputs import CLASSIFIER_CKPT, METRICS, write_metrics
from medsec.config import MedSecConfig
from medsec.data.types import ImageDataset
from medsec.deepfakes.dataset import METADATA_FILE, to_uint8
from medsec.deepfakes.figures import class_grid, tamper_figure, utility_figure
from medsec.deepfakes.pipeline import eps_tag, reference_metrics
from medsec.deepfakes.sampling import sample_per_class
from medsec.io import save_npz_deterministic, write_atomic
from medsec.stages.deepfake import real_reference, task_view
from tasks.common import load_config_task, load_dataset_task
from tasks.deepfake import (
    detector_task,
    generator_report_task,
    load_victim_task,
    private_canary_task,
    private_generator_task,
    publish_dataset_task,
    tamper_task,
    train_generator_task,
)
from tasks.privacy import log_canary_audit
from tasks.tracking import log_artifact, log_figure, log_metrics, temp_artifact_dir, tracked_run

DEEPFAKE_DIR = Path("outputs") / "deepfakes"
GENERATOR_CKPT = DEEPFAKE_DIR / "generator.pt"
DEEPFAKE_METRICS = METRICS / "deepfake.json"
SAMPLE_PER_CLASS = 16  # images per class in the MLflow sample of the DeepFake dataset


def _tags(cfg: MedSecConfig, verification: str) -> dict[str, str]:
    eps = ",".join(f"{e:g}" for e in cfg.deepfake.dp.epsilons) or "none"
    return {"medsec.verification": verification, "medsec.attack": "deepfake_tamper",
            "medsec.generator": "conditional_dcgan",
            "medsec.privacy": f"dp_gan_eps_{eps}" if cfg.deepfake.dp.epsilons else "none"}


@contextmanager
def _timed(name: str, timings: dict[str, float]) -> Iterator[None]:
    """Record the wall time of a step as ``seconds_{name}`` (MLflow only, not the DVC metrics:
    timings differ from run to run)."""
    start = time.perf_counter()
    yield
    timings[f"seconds_{name}"] = time.perf_counter() - start


@contextmanager
def _threads(count: int | None) -> Iterator[None]:
    """Run with ``count`` torch intra-op threads (None: unchanged); restored afterwards."""
    previous = torch.get_num_threads()
    if count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _save_png(figure: Figure, name: str) -> None:
    """``outputs/deepfakes/<name>`` and the MLflow artifact ``deepfake/<name>``."""
    write_atomic(DEEPFAKE_DIR / name, lambda tmp: figure.savefig(tmp, format="png", dpi=100))
    log_figure(figure, f"deepfake/{name}")


def _log_dataset_sample(splits: dict[str, ImageDataset], class_names: list[str]) -> None:
    """A small npz (first images of each class) and the metadata, as MLflow artifacts."""
    train = splits["train"]
    picks = np.concatenate([np.flatnonzero(train.labels == k)[:SAMPLE_PER_CLASS]
                            for k in range(len(class_names))])
    with temp_artifact_dir() as tmp:
        path = Path(tmp) / "fakes_sample.npz"
        save_npz_deterministic(path, {
            "images": to_uint8(train.images[picks]),
            "labels": train.labels[picks].astype(np.uint8).reshape(-1, 1)})
        log_artifact(path, "deepfake")
    log_artifact(DEEPFAKE_DIR / METADATA_FILE, "deepfake")


@flow(name="deepfake")
def deepfake_flow(
    config: str | None = None, preset: str | None = None, overrides: list[str] | None = None,
    victim: str = str(CLASSIFIER_CKPT),
) -> dict:
    """Run the DeepFake stage; returns ``{"run_id", "metrics"}``."""
    cfg = load_config_task(config, preset, overrides)
    data = load_dataset_task(cfg)
    victim_model = load_victim_task(data, victim)
    # multi-label data: the binary "any finding" task (tagged medsec.deepfake.labels)
    data, victim_model, any_finding = task_view(data, victim_model)
    labels_tag = {"medsec.deepfake.labels": "any-finding"} if any_finding else {}
    ref = real_reference(cfg, data, victim_model)
    dcfg = cfg.deepfake
    with tracked_run("deepfake", cfg, data.version,
                     tags=_tags(cfg, data.verification) | labels_tag,
                     run_name=f"deepfake-{cfg.dataset.name}") as run, \
            _threads(dcfg.num_threads or cfg.train.num_threads):
        metrics = reference_metrics(victim_model, ref)
        timings: dict[str, float] = {}
        # 1. Generate and publish the DeepFake dataset.
        with _timed("generate", timings):
            gan = train_generator_task(ref.train, data.num_classes, dcfg.gan, "gan")
            splits = publish_dataset_task(cfg, data, ref, gan, DEEPFAKE_DIR, GENERATOR_CKPT)
            log_artifact(GENERATOR_CKPT, "model")
            _log_dataset_sample(splits, data.class_names)
            images, labels = sample_per_class(gan.generator, 8, dcfg.dataset.sample_seed)
            _save_png(class_grid(images.numpy(), labels.numpy(), data.class_names,
                                 title="synthetic images per class"), "samples.png")
        # 2. Judge it: quality, memorisation, membership, train-on-synthetic utility.
        with _timed("judge", timings):
            metrics |= generator_report_task(cfg, gan, ref, splits)
        # 3. Detect fakes, also of a generator the detector never saw.
        with _timed("detect", timings):
            unseen = train_generator_task(ref.train, data.num_classes, dcfg.unseen_gan,
                                          "unseen_gan")
            metrics |= detector_task(cfg, ref, gan, unseen)
        # 4. Tamper real images (add/remove disease evidence in a region).
        with _timed("tamper", timings):
            report = tamper_task(cfg, ref, victim_model)
            metrics |= report.metrics
            _save_png(tamper_figure(report.result, report.before.numpy(),
                                    report.after.numpy(), data.class_names), "tampering.png")
        # 5. Differentially private synthetic data at each target epsilon.
        utility: dict[float, float] = {}
        with _timed("private", timings):
            for epsilon in dcfg.dp.epsilons:
                dp_metrics, dp_gan = private_generator_task(cfg, ref, epsilon)
                metrics |= dp_metrics
                tag = eps_tag(epsilon)
                utility[dp_metrics[f"dp_eps{tag}_epsilon"]] = dp_metrics[f"dp_eps{tag}_tstr_acc"]
                images, labels = sample_per_class(dp_gan.generator, 8, dcfg.dataset.sample_seed)
                log_figure(class_grid(images.numpy(), labels.numpy(), data.class_names,
                                      title=f"DP generator, target epsilon {epsilon:g}"),
                           f"deepfake/samples_dp_eps{tag}.png")
                audit = private_canary_task(cfg, ref, epsilon)  # deepfake.canary
                if audit is not None:  # its own child run, tagged medsec.audit=canary
                    metrics[f"dp_eps{tag}_epsilon_audit_lower"] = audit.epsilon_audit_lower
                    with tracked_run("deepfake", cfg, data.version, nested=True,
                                     run_name=f"deepfake-dp-eps{tag}-canary",
                                     tags=_tags(cfg, data.verification)
                                     | {"medsec.privacy": f"dp_gan_eps_{epsilon:g}"}):
                        log_canary_audit(audit, f"deepfake/canary_audit_eps{tag}.json")
        if utility:
            _save_png(utility_figure(utility, metrics["real_test_acc"], metrics["tstr_acc"]),
                      "dp_utility.png")
        log_metrics(metrics | timings)
        write_metrics(DEEPFAKE_METRICS, metrics)
    return {"run_id": run.info.run_id, "metrics": metrics, "timings": timings}


if __name__ == "__main__":
    deepfake_flow()
