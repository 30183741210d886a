"""Segmentation flow: train a MONAI segmenter on image/mask data, evaluate it, attack it
(untargeted, erase, inject), and log everything to MLflow and DVC files.

The data first goes through the project's Great Expectations suite (images and masks; a hard
failure stops the flow before training; report in ``outputs/segmentation/validation/``).
MLflow: one run tagged ``medsec.stage=train`` (data checks as ``data_*``, clean metrics,
checkpoint) and one run per attack tagged ``medsec.stage=attack``, ``medsec.attack=<name>``
(metrics, overlay figure, dataset); all carry ``medsec.task=segmentation``. Files:
``models/segmenter.pt``, ``metrics/segmentation.json``,
``outputs/segmentation/<attack>.{npz,json}``.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.outputs import METRICS, MODELS
from medsec.data.validation import raise_if_failed, write_report
from medsec.io import write_json
from medsec.segmentation.checkpoint import save_segmenter
from medsec.segmentation.dataset import save_seg_adversarial
from medsec.segmentation.viz import overlay_figure
from tasks.common import load_config_task, load_dataset_task
from tasks.segmentation import (
    evaluate_segmenter_task,
    seg_attack_task,
    seg_data_task,
    train_segmenter_task,
    validate_seg_data_task,
)
from tasks.tracking import log_artifact, log_figure, log_metrics, tracked_run

SEGMENTATION_DIR = Path("outputs") / "segmentation"
SEGMENTATION_METRICS = METRICS / "segmentation.json"
SEGMENTER_CKPT = MODELS / "segmenter.pt"


@flow(name="segmentation")
def segmentation_flow(
    config: str | None = None, preset: str | None = None, overrides: list[str] | None = None,
) -> dict:
    """Returns ``{"run_id", "attack_run_ids", "metrics"}`` (metrics as in the JSON file)."""
    cfg = load_config_task(config, preset, overrides)
    seg = cfg.segmentation
    loaded = load_dataset_task(cfg) if seg.data == "phantoms" else None
    data = seg_data_task(seg, loaded)
    tags = {"medsec.task": "segmentation", "medsec.model": seg.model,
            "medsec.dataset": data.name}
    with tracked_run("train", cfg, data.version, tags=tags,
                     run_name=f"segmentation-train-{data.name}-{seg.model}") as run:
        report = validate_seg_data_task(data, seg, cfg.validation.min_class_fraction)
        for path in write_report(report, SEGMENTATION_DIR / "validation").values():
            log_artifact(path, "validation")
        log_metrics({f"data_{k}": v for k, v in report.summary_metrics().items()})
        raise_if_failed(report)
        trained = train_segmenter_task(seg, data)
        clean = evaluate_segmenter_task(trained, data)
        log_metrics(clean | {"best_epoch": trained.fit.best_epoch,
                             "fit_seconds": trained.fit.seconds})
        save_segmenter(SEGMENTER_CKPT, trained.model, trained.meta)
        log_artifact(SEGMENTER_CKPT, "model")
    source = {"mlflow_run_id": run.info.run_id, "model": seg.model, "dataset": data.name,
              "data_version": data.version}
    attacks: dict[str, dict[str, float]] = {}
    run_ids: dict[str, str] = {}
    for spec in seg.attacks:
        with tracked_run("attack", cfg, data.version,
                         tags=tags | {"medsec.attack": spec.name,
                                      "medsec.source_run_id": run.info.run_id},
                         run_name=f"segmentation-{spec.name}-{data.name}") as attack_run:
            result = seg_attack_task(trained, spec, data, seg)
            log_metrics(result.metrics)
            log_figure(overlay_figure(result, seg.n_figure, f"{data.name}: {spec.name}"),
                       f"segmentation/{spec.name}_overlay.png")
            if seg.save_adversarial:
                paths = save_seg_adversarial(SEGMENTATION_DIR, result, source)
                log_artifact(paths["json"], "segmentation")
                log_artifact(paths["npz"], "segmentation")
            attacks[spec.name] = {k: v for k, v in result.metrics.items() if k != "seconds"}
            run_ids[spec.name] = attack_run.info.run_id
    metrics = {"clean": clean, "best_epoch": trained.fit.best_epoch, "attacks": attacks}
    write_json(SEGMENTATION_METRICS, metrics)
    return {"run_id": run.info.run_id, "attack_run_ids": run_ids, "metrics": metrics}


if __name__ == "__main__":
    segmentation_flow()
