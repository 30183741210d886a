"""Evaluate flow: test metrics of a trained checkpoint, in a run of its own that names the
training run (``medsec.source_run_id``)."""

from __future__ import annotations

import json
from pathlib import Path

from prefect import flow

from flows.outputs import (
    CLASSIFIER_CKPT,
    CLASSIFIER_INFO,
    CONFUSION_PNG,
    EVALUATE_METRICS,
    PREPARED,
    SAMPLES_PNG,
    at,
    write_metrics,
)
from medsec.io import write_png
from medsec.stages.classifier import clinical_metrics, split
from medsec.training.checkpoint import load_classifier, require_data_version
from medsec.viz import confusion_figure, sample_grid
from tasks.common import load_config_task, load_dataset_task
from tasks.tracking import log_figure, log_metrics, tracked_run
from tasks.train import evaluate_task


@flow(name="evaluate")
def evaluate_flow(
    config: str | None = None, preset: str | None = None, overrides: list[str] | None = None,
    checkpoint: str | None = None, info: str | None = None, out: str = ".",
) -> dict:
    """Write ``metrics/evaluate.json`` and figures under the output root ``out`` for
    ``checkpoint`` (default ``<out>/models/classifier.pt``, its card ``info`` beside it) on
    ``<out>/prepared``; log them to an ``evaluate`` run tagged with the training run id."""
    cfg = load_config_task(config, preset, overrides)
    data = load_dataset_task(cfg, at(out, PREPARED))
    checkpoint = checkpoint or str(at(out, CLASSIFIER_CKPT))
    info = info or str(at(out, CLASSIFIER_INFO))
    model, meta = load_classifier(checkpoint)
    require_data_version(meta, data.name, data.version, checkpoint)
    source = json.loads(Path(info).read_text()) if Path(info).is_file() else {}
    tags = {"medsec.source_run_id": str(source.get("run_id")),
            "medsec.verification": data.verification}
    with tracked_run("evaluate", cfg, data.version, tags=tags):
        evaluation = evaluate_task(cfg, data, model, "test")
        log_metrics(evaluation.metrics)
        test = split(cfg, data, "test")
        if data.task == "multilabel":  # findings present at sigmoid >= 0.5; 2x2 pooled
            preds = (evaluation.logits >= 0).long().numpy()
            cm_fig = confusion_figure(evaluation.confusion.sum(axis=0), ["absent", "present"],
                                      "test confusion (all findings, threshold 0.5)")
        else:
            preds = evaluation.logits.argmax(1).numpy()
            cm_fig = confusion_figure(evaluation.confusion, data.class_names, "test confusion")
        grid = sample_grid(test.images, test.labels, data.class_names, preds,
                           title=f"{data.name} test samples")
        write_png(at(out, CONFUSION_PNG), cm_fig)
        write_png(at(out, SAMPLES_PNG), grid)
        log_figure(cm_fig, "evaluation/confusion.png")
        log_figure(grid, "evaluation/samples.png")
        val_logits = evaluate_task(cfg, data, model, "val").logits
        extra = clinical_metrics(cfg, data, model, val_logits, evaluation.logits)
        log_metrics(extra)  # sensitivity/specificity at the val threshold, MedMNIST-C accuracy
        metrics = dict(evaluation.metrics) | extra
        write_metrics(at(out, EVALUATE_METRICS),
                   metrics | {"confusion": evaluation.confusion.tolist()})
    return metrics


if __name__ == "__main__":
    evaluate_flow()
