"""Privacy flows: the privacy-utility sweep, and the audit of any trained checkpoint.

``privacy`` (DVC stage): the RECIPE audit (``medsec.audit=recipe``). For the non-private
baseline and every target epsilon of ``privacy.sweep``, train the same GroupNorm network (same
seed) through the project's train path on a random half of the pool (training + validation
images; :mod:`medsec.privacy.recipe_audit`), evaluate it on the test split and audit it with
reference models trained on halves of the same pool; the declared attack is the headline.
One MLflow run per model (``medsec.stage=privacy``, ``medsec.privacy=none|dp-eps1|...``), then
a summary run (``medsec.privacy=sweep``) with the privacy-utility table and curve; the same
table goes to ``metrics/privacy.json`` and ``reports/privacy/``.

``privacy-audit`` (``medsec stage audit``, ``medsec.audit=checkpoint``): audit an existing
checkpoint (``privacy.audit.checkpoint``, default ``models/classifier.pt``, or a registered
model ``models:/medsec-<dataset>-<model>@champion``: the checkpoint its training run logged),
e.g. a defended model: with the recipe protocol when its card records its pool members
(``audit_members``), else its training split against held-out images; the JSON states what
the sizes resolve.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from prefect import flow

from flows.defense import log_failed_defense
from flows.outputs import METRICS, REPORTS, write_metrics
from medsec.config import MedSecConfig
from medsec.data.types import LoadedDataset
from medsec.errors import DataError
from medsec.io import write_atomic, write_json, write_text
from medsec.training.checkpoint import load_classifier, require_data_version, save_classifier
from tasks.common import load_config_task, load_dataset_task
from tasks.privacy import (
    audit_data_task,
    audit_pool_task,
    audit_task,
    log_audit,
    log_canary_audit,
    log_dp_record,
    log_recipe_audit,
    mapped_points,
    mapped_references,
    resolve_checkpoint,
)
from tasks.runners import check_runner
from tasks.tracking import (
    log_artifact,
    log_dict,
    log_metrics,
    log_training_device,
    set_tags,
    temp_artifact_dir,
    tracked_run,
)
from tasks.train import evaluate_task

PRIVACY_REPORT_DIR = REPORTS / "privacy"
PRIVACY_METRICS = METRICS / "privacy.json"
AUDIT_REPORT_DIR = REPORTS / "privacy_audit"


def _save_png(figure: Any, path: Path) -> None:
    write_atomic(path, lambda tmp: figure.savefig(tmp, format="png", dpi=100))


def _log_checkpoint(model: Any, meta: dict[str, Any]) -> None:
    with temp_artifact_dir() as tmp:
        path = save_classifier(Path(tmp) / "classifier.pt", model, meta)
        log_artifact(path, "model")


def _evaluate_and_audit(cfg: MedSecConfig, data: LoadedDataset, model: Any,
                        meta: dict[str, Any], sets: Any, title: str,
                        roc_png: Path) -> tuple[dict, Any]:
    """Test metrics and the audit of ``model``, logged to the active run (ROC also to
    ``roc_png``)."""
    test = evaluate_task(cfg, data, model, "test").metrics
    log_metrics(test)
    result = audit_task(model, meta, cfg, data, sets)
    log_audit(result, list(data.class_names), f"MIA ROC: {title}", roc_png)
    return test, result


def _log_point(point: Any, done: Any, data: LoadedDataset, tags: dict[str, str]
               ) -> tuple[dict[str, Any], str]:
    """Log one completed sweep point (``done``: its ``PointResult``) in a child run (target
    checkpoint, DP record, test metrics, recipe audit, one-run DP audit in its own run);
    returns (table row, run id)."""
    from medsec.privacy.report import summary_row

    cfg, result, side, canary = point.cfg, done.result, done.side, done.canary
    name = f"privacy-{point.label}-{cfg.dataset.name}-{cfg.model.name}"
    with tracked_run("privacy", cfg, data.version, tags=tags | {
            "medsec.privacy": point.label, "medsec.privacy.status": "ok"},
                     run_name=name, nested=True) as run:
        trained = result.target
        record = trained.meta["privacy"]
        for epoch, epsilon in enumerate(record.get("epsilon_per_epoch", [])):
            log_metrics({"epsilon": epsilon}, step=epoch)  # the target's epsilon per epoch
        log_dp_record(record)
        log_metrics({"best_epoch": trained.fit.best_epoch, "fit_seconds": trained.fit.seconds})
        log_training_device(trained.meta)  # medsec.device / medsec.precision
        _log_checkpoint(trained.model, trained.meta)
        log_metrics(done.test)
        log_recipe_audit(result, side, list(data.class_names), f"{data.name}, {point.label}",
                         PRIVACY_REPORT_DIR / f"mia_roc_{point.label}.png")
        if canary is not None:  # one-run DP audit: its own run, medsec.audit=canary
            with tracked_run("privacy", cfg, data.version, run_name=f"{name}-canary",
                             tags=tags | {"medsec.privacy": point.label}, nested=True):
                log_canary_audit(canary)
    metrics = result.metrics | (side.metrics if side is not None else {})
    row = summary_row(point.label, point.target_epsilon, record, done.test, metrics,
                      result.declared)
    if canary is not None:
        row["epsilon_audit_lower"] = canary.epsilon_audit_lower
        row["audit_num_canaries"] = canary.num_canaries
    return row, run.info.run_id


def _failed_lines(failed: dict[str, str]) -> str:
    """Markdown status lines naming each failed sweep point ('' when none failed)."""
    return "".join(f"\n- sweep point {label}: failed: {error} (not in the table; the sweep "
                   "went on)\n" for label, error in failed.items())


@flow(name="privacy")
def privacy_flow(
    config: str | None = None, preset: str | None = None, overrides: list[str] | None = None,
) -> dict:
    """Write ``metrics/privacy.json`` and ``reports/privacy/`` (table .md/.csv, curve, ROCs).

    MLflow: a parent run (``medsec.privacy=sweep``: the table, the curve) with one child run
    per model (``medsec.privacy=none|dp-eps<target>``).
    """
    from medsec.privacy.report import privacy_utility_figure, table_csv, table_markdown
    from medsec.stages.privacy import sweep_points

    cfg = load_config_task(config, preset, overrides)
    check_runner(cfg.runner)  # an unreachable Dask scheduler: one clear error, nothing done
    data = load_dataset_task(cfg)
    points = sweep_points(cfg)
    pool = audit_pool_task(cfg, data)
    shutil.rmtree(PRIVACY_REPORT_DIR, ignore_errors=True)
    tags = {"medsec.verification": data.verification,
            "medsec.privacy.sweep": uuid.uuid4().hex[:12]}
    name = f"privacy-sweep-{cfg.dataset.name}-{cfg.model.name}"
    with tracked_run("privacy", cfg, data.version, tags=tags | {"medsec.privacy": "sweep"},
                     run_name=name) as parent:
        rows, runs, failed = [], {}, {}
        for point, outcome in zip(points, mapped_points(cfg, data, points, pool), strict=True):
            if not outcome.ok:  # one FAILED child run with the error line; the sweep goes on
                failed[point.label] = str(outcome.error)
                runs[point.label] = log_failed_defense(
                    point.cfg, data.version, tags | {"medsec.privacy": point.label,
                                                     "medsec.privacy.status": "failed"},
                    outcome.error, f"privacy-{point.label}-{cfg.dataset.name}-{cfg.model.name}",
                    stage="privacy", nested=True)
                continue
            row, runs[point.label] = _log_point(point, outcome.value, data, tags)
            rows.append(row)
        if not rows:
            raise RuntimeError(f"every privacy sweep point failed: {failed}")
        title = f"Privacy-utility table: {data.name}, {cfg.model.name} (GroupNorm)"
        write_text(PRIVACY_REPORT_DIR / "privacy_utility.md",
                   table_markdown(rows, title) + _failed_lines(failed))
        write_text(PRIVACY_REPORT_DIR / "privacy_utility.csv", table_csv(rows))
        _save_png(privacy_utility_figure(rows), PRIVACY_REPORT_DIR / "privacy_utility.png")
        table = {row["privacy"]: {k: v for k, v in row.items() if k != "privacy"}
                 for row in rows}
        write_metrics(PRIVACY_METRICS, table)
        for path in sorted(PRIVACY_REPORT_DIR.iterdir()):
            log_artifact(path, "privacy")
        log_dict({"table": table, "runs": runs}, "privacy/privacy.json")
    status = {label: "ok" for label in table} | {k: f"failed: {v}" for k, v in failed.items()}
    return {"summary_run_id": parent.info.run_id, "runs": runs, "table": table,
            "status": status}


def _check_members(path: str, meta: dict[str, Any], cfg: MedSecConfig,
                   data: LoadedDataset) -> None:
    """The audit's members are the configured training split: it must be the model's."""
    require_data_version(meta, data.name, data.version, path)
    if meta.get("audit_members"):  # trained on recorded pool members (recipe audit)
        return
    n_train = len(data.splits["train"].head(cfg.dataset.max_train))
    if meta.get("num_train") not in (None, n_train):
        raise DataError(
            f"checkpoint {path} was trained on {meta['num_train']} images, but the configured "
            f"training split has {n_train} (dataset.max_train): the audit's members would be "
            "wrong; audit it with the config it was trained with"
        )


@flow(name="privacy-audit")
def audit_flow(
    config: str | None = None, preset: str | None = None, overrides: list[str] | None = None,
    checkpoint: str | None = None,
) -> dict:
    """Audit ``checkpoint`` (default ``privacy.audit.checkpoint``; a path or a registered
    model ``models:/<name>@<alias>``) with ``privacy.audit``;
    one MLflow run (``medsec.stage=privacy``) and ``reports/privacy_audit/<name>.json``."""
    from medsec.io import file_digest
    from medsec.privacy.sweep import record_label

    cfg = load_config_task(config, preset, overrides)
    check_runner(cfg.runner)
    data = load_dataset_task(cfg)
    path = checkpoint or cfg.privacy.audit.checkpoint  # a file, or models:/<name>@<alias>
    with tempfile.TemporaryDirectory(prefix="medsec-audit-") as tmp:
        local, source_run = resolve_checkpoint(path, cfg, tmp)
        model, meta = load_classifier(local)
        md5 = file_digest(local)
    _check_members(path, meta, cfg, data)
    label = record_label(meta.get("privacy"))
    tags = {"medsec.verification": data.verification, "medsec.privacy": label,
            "medsec.privacy.checkpoint": str(path), "medsec.privacy.checkpoint_md5": md5}
    if source_run is not None:  # a registered model: the run that trained and logged it
        tags["medsec.source_run_id"] = source_run
    if meta.get("defense"):
        tags["medsec.defense"] = str(meta["defense"])
    audited = cfg.model_copy(update={"model": cfg.model.model_copy(
        update={"name": meta["model_name"], "norm": meta["norm"], "dropout": meta["dropout"]})})
    stem = (Path(path).stem if source_run is None  # models:/name@alias -> name-alias
            else re.sub(r"[^A-Za-z0-9_.-]+", "-", path[len("models:/"):]))
    from medsec.metrics.privacy import resolution_note
    from medsec.stages import privacy as stage

    pooled = stage.checkpoint_pool_target(cfg, data, meta)
    roc_png = AUDIT_REPORT_DIR / f"{stem}_mia_roc.png"
    with tracked_run("privacy", audited, data.version, tags=tags,
                     run_name=f"privacy-audit-{stem}-{label}") as run:
        record = meta.get("privacy") or {"mechanism": "none"}
        dp = log_dp_record(record)
        if pooled is None:  # members: the training split; non-members: held-out images
            sets = audit_data_task(cfg, data, meta)  # never the selecting split
            test, result = _evaluate_and_audit(cfg, data, model, meta, sets,
                                               f"{stem} ({label})", roc_png)
            metrics, reasons = result.metrics, result.null_reasons
            declared, nonmembers, notes = result.declared, result.nonmembers_from, result.notes
        else:  # the members it was trained on, recorded in its card: the recipe protocol
            test = evaluate_task(cfg, data, model, "test").metrics
            log_metrics(test)
            pool, members = pooled
            recipe = stage.checkpoint_recipe_audit(cfg, data, model, meta, pool, members,
                                                   runner=mapped_references(cfg.runner))
            log_recipe_audit(recipe, None, list(data.class_names), f"{stem} ({label})",
                             roc_png)
            metrics, reasons, declared = recipe.metrics, recipe.null_reasons, recipe.declared
            nonmembers = "pool (the recorded members' complement in train+val)"
            notes = [resolution_note(int(len(pool) - members.sum()), int(members.sum()))]
        set_tags({"medsec.audit": "checkpoint"})
    out = {"run_id": run.info.run_id, "checkpoint": str(path), "privacy": label,
           "audit": "checkpoint", "declared_attack": declared, "nonmembers": nonmembers,
           "resolution": notes, "metrics": test | dp | metrics, "null_reasons": reasons}
    write_json(AUDIT_REPORT_DIR / f"{stem}.json", out)
    return out


if __name__ == "__main__":
    privacy_flow()
