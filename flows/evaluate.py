"""Evaluate flow: test metrics of the trained checkpoint, logged into its training run."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import flow

from flows.outputs import (
    CLASSIFIER_CKPT,
    CLASSIFIER_INFO,
    CONFUSION_PNG,
    EVALUATE_METRICS,
    SAMPLES_PNG,
)
from medsec.io import write_atomic, write_json
from medsec.training.checkpoint import load_classifier, require_data_version
from medsec.stages.classifier import split
from medsec.viz import confusion_figure, sample_grid
from tasks.common import load_config_task, load_dataset_task
from tasks.tracking import log_figure, log_metrics, tracked_run
from tasks.train import evaluate_task


def _save_png(figure, path: Path) -> None:
    write_atomic(path, lambda tmp: figure.savefig(tmp, format="png", dpi=100))


@flow(name="evaluate")
def evaluate_flow(
    config: str | None = None, preset: str | None = None, overrides: list[str] | None = None,
    checkpoint: str = str(CLASSIFIER_CKPT), info: str = str(CLASSIFIER_INFO),
) -> dict:
    """Write ``metrics/evaluate.json`` and figures; log them to the checkpoint's MLflow run."""
    cfg = load_config_task(config, preset, overrides)
    data = load_dataset_task(cfg)
    model, meta = load_classifier(checkpoint)
    require_data_version(meta, data.name, data.version, checkpoint)
    run_id = None
    if Path(info).is_file():
        run_id = json.loads(Path(info).read_text()).get("run_id")
    with tracked_run("train", cfg, data.version, run_id=run_id):
        evaluation = evaluate_task(cfg, data, model, "test")
        log_metrics(evaluation.metrics)
        test = split(cfg, data, "test")
        preds = evaluation.logits.argmax(1).numpy()
        cm_fig = confusion_figure(evaluation.confusion, data.class_names, "test confusion")
        grid = sample_grid(test.images, test.labels, data.class_names, preds,
                           title=f"{data.name} test samples")
        _save_png(cm_fig, CONFUSION_PNG)
        _save_png(grid, SAMPLES_PNG)
        log_figure(cm_fig, "evaluation/confusion.png")
        log_figure(grid, "evaluation/samples.png")
        metrics = dict(evaluation.metrics)
        write_json(EVALUATE_METRICS, metrics | {"confusion": evaluation.confusion.tolist()})
    return metrics


if __name__ == "__main__":
    evaluate_flow()
