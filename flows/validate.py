"""Validate flow: per-image table + Great Expectations suite; hard failures stop the run."""

from __future__ import annotations

from prefect import flow

from flows.outputs import PREPARED, VALIDATION_METRICS, VALIDATION_REPORT_DIR, at, write_metrics
from medsec.data.validation import write_report
from medsec.stages.validation import enforce
from tasks.common import load_config_task, load_dataset_task
from tasks.tracking import log_artifact, log_metrics, tracked_run
from tasks.validate import validate_task


@flow(name="validate")
def validate_flow(config: str | None = None, preset: str | None = None,
                  overrides: list[str] | None = None, out: str = ".") -> dict:
    """Write ``reports/validation/report.{json,md}`` and ``metrics/validation.json``."""
    cfg = load_config_task(config, preset, overrides)
    data = load_dataset_task(cfg, at(out, PREPARED))  # out: the output root
    tags = {"medsec.verification": data.verification}
    with tracked_run("validate", cfg, data.version, tags=tags):
        report = validate_task(cfg, data)
        paths = write_report(report, at(out, VALIDATION_REPORT_DIR))
        for path in paths.values():
            log_artifact(path, "validation")
        metrics = report.summary_metrics()
        log_metrics(metrics)
        enforce(cfg, report)
        write_metrics(at(out, VALIDATION_METRICS), metrics)
    return metrics


if __name__ == "__main__":
    validate_flow()
