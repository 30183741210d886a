"""Train flow: fit the configured classifier, save the checkpoint, log curves to MLflow."""

from __future__ import annotations

import csv
import io

import torch
from prefect import flow

from flows.outputs import (
    CLASSIFIER_CKPT,
    CLASSIFIER_INFO,
    PREPARED,
    TRAIN_HISTORY,
    TRAIN_METRICS,
    at,
    write_metrics,
)
from medsec.io import write_json, write_text
from medsec.training.checkpoint import save_classifier
from medsec.viz import curves_figure
from tasks.common import load_config_task, load_dataset_task
from tasks.models import log_classifier
from tasks.privacy import log_dp_record
from tasks.tracking import (
    log_artifact,
    log_figure,
    log_metrics,
    log_training_device,
    tracked_run,
)
from tasks.train import train_task


def history_csv(history: list[dict[str, float]], keys: list[str] | None = None) -> str:
    """``history`` as CSV with columns ``keys`` (default: the first row's, or ``epoch``)."""
    buffer = io.StringIO()
    if keys is None:
        keys = list(history[0]) if history else ["epoch"]
    writer = csv.DictWriter(buffer, fieldnames=keys)
    writer.writeheader()
    writer.writerows(history)
    return buffer.getvalue()


@flow(name="train")
def train_flow(
    config: str | None = None, preset: str | None = None, overrides: list[str] | None = None,
    progress: bool = False, out: str = ".",
) -> dict:
    """Write ``models/classifier.{pt,json}``, ``metrics/train.json``, the history CSV under the
    output root ``out`` (reading ``<out>/prepared``); returns the run id, the model card
    (``meta``) and the written ``checkpoint`` and ``info`` paths.

    With ``privacy.dp.enabled``: epsilon per epoch (``step`` = epoch), the final ``epsilon`` and
    ``dp_*`` metrics, ``privacy/dp.json``; the same record is in the checkpoint's metadata.
    """
    cfg = load_config_task(config, preset, overrides)
    data = load_dataset_task(cfg, at(out, PREPARED))
    ckpt, info_path = at(out, CLASSIFIER_CKPT), at(out, CLASSIFIER_INFO)
    tags = {"medsec.verification": data.verification,
            "medsec.privacy": "dp-sgd" if cfg.privacy.dp.enabled else "none"}
    with tracked_run("train", cfg, data.version, tags=tags) as run:
        trained = train_task(cfg, data, progress=progress)
        log_training_device(trained.meta)  # medsec.device / medsec.precision (report)
        best = trained.fit.history[trained.fit.best_epoch]
        metrics = {"best_epoch": trained.fit.best_epoch,
                   **{f"best_{k}": v for k, v in best.items() if k.startswith("val_")}}
        dp = log_dp_record(trained.meta["privacy"])  # epsilon, dp_* (empty if non-private)
        log_metrics(metrics | {"fit_seconds": trained.fit.seconds})  # timing: MLflow only
        log_figure(curves_figure(trained.fit.history, ("train_loss", "val_loss")),
                   "curves/loss.png")
        log_figure(curves_figure(trained.fit.history, ("val_acc", "val_auc")),
                   "curves/val_metrics.png")
        save_classifier(ckpt, trained.model, trained.meta)
        log_artifact(ckpt, "model")
        log_classifier(trained.model, torch.from_numpy(data.splits["val"].images[:8]),
                       data.name, cfg.model.name, alias="champion")  # registry, servable
        info = {"run_id": run.info.run_id, "meta": trained.meta}
        write_json(info_path, info)
        write_text(at(out, TRAIN_HISTORY), history_csv(trained.fit.history))
        write_metrics(at(out, TRAIN_METRICS), metrics | dp)
    return info | {"checkpoint": str(ckpt), "info": str(info_path)}


if __name__ == "__main__":
    train_flow()
