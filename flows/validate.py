"""Validate flow: per-image table + Great Expectations suite; hard failures stop the run."""

from __future__ import annotations

from prefect import flow

from flows.outputs import VALIDATION_METRICS, VALIDATION_REPORT_DIR
from medsec.data.validation import raise_if_failed, write_report
from medsec.errors import ValidationFailed
from medsec.io import write_json
from tasks.common import load_config_task, load_dataset_task
from tasks.tracking import log_artifact, log_metrics, tracked_run
from tasks.validate import validate_task


@flow(name="validate")
def validate_flow(
    config: str | None = None, preset: str | None = None, overrides: list[str] | None = None
) -> dict:
    """Write ``reports/validation/report.{json,md}`` and ``metrics/validation.json``."""
    cfg = load_config_task(config, preset, overrides)
    data = load_dataset_task(cfg)
    tags = {"medsec.verification": data.verification}
    with tracked_run("validate", cfg, data.version, tags=tags):
        report = validate_task(cfg, data)
        paths = write_report(report, VALIDATION_REPORT_DIR)
        for path in paths.values():
            log_artifact(path, "validation")
        metrics = report.summary_metrics()
        log_metrics(metrics)
        raise_if_failed(report)
        if cfg.validation.fail_on_warnings and report.warnings:
            raise ValidationFailed(
                "validation.fail_on_warnings is set and the data has warnings:\n  "
                + "\n  ".join(report.warnings)
            )
        write_json(VALIDATION_METRICS, metrics)
    return metrics


if __name__ == "__main__":
    validate_flow()
