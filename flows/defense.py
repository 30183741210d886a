"""Defense flow: build every configured defense, score it and the undefended model on the same
test images under standard and adaptive attacks; one MLflow run per defense."""

from __future__ import annotations

from typing import Any

import torch
from prefect import flow, unmapped
from torch import Tensor, nn

from flows.outputs import (
    CLASSIFIER_CKPT,
    CLASSIFIER_INFO,
    METRICS,
    MODELS,
    REPORTS,
    write_metrics,
)
from medsec.config import MedSecConfig
from medsec.defenses.build import BuildContext
from medsec.defenses.config import DefenseSpec
from medsec.defenses.evaluate import DefenseResult
from medsec.defenses.scorecard import scorecard_markdown
from medsec.io import atomic_dir, write_json, write_text
from medsec.stages import defense as stage
from medsec.stages.applicability import SKIPPED_TAG, markdown_section, tag_value
from tasks.attack import load_victim_task
from tasks.common import load_config_task, load_dataset_task
from tasks.defense import (
    defense_task,
    eval_split_task,
    log_defense_result,
    log_epochs,
    save_defended,
)
from tasks.runners import (
    Outcome,
    check_runner,
    model_digest,
    outcomes,
    sweep_runner,
    sweep_task,
)
from tasks.tracking import log_text, tracked_run

DEFENDED_DIR = MODELS / "defended"
DEFENSE_REPORT_DIR = REPORTS / "defense"
SCORECARD = DEFENSE_REPORT_DIR / "scorecard.md"
DEFENSE_METRICS = METRICS / "defense.json"


@flow(name="defense")
def defense_flow(
    config: str | None = None, preset: str | None = None, overrides: list[str] | None = None,
    checkpoint: str = str(CLASSIFIER_CKPT), info: str = str(CLASSIFIER_INFO),
) -> dict:
    """Write ``metrics/defense.json``, ``reports/defense/scorecard.md`` and the defended
    checkpoints ``models/defended/<label>.pt`` (plus ``index.json``); log one run per defense
    (``medsec.stage=defense``, ``medsec.defense=<label>``) and one for the undefended model."""
    cfg = load_config_task(config, preset, overrides)
    check_runner(cfg.runner)  # an unreachable Dask scheduler: one clear error, nothing done
    if cfg.defense.num_threads:  # training-time defenses follow train.num_threads if set
        torch.set_num_threads(cfg.defense.num_threads)
    data = load_dataset_task(cfg)
    baseline, source = load_victim_task(checkpoint, info, data)
    cfg, skipped = stage.applicable(cfg, data)  # e.g. smoothing on multi-label data: recorded
    images, labels = eval_split_task(cfg, data, baseline, source["model_name"])
    ctx = stage.context(cfg, data, baseline)
    tags = {SKIPPED_TAG: tag_value(skipped), "medsec.verification": data.verification,
            "medsec.source_run_id": str(source["mlflow_run_id"]),
            "medsec.checkpoint_md5": source["checkpoint_md5"]}
    specs: list[DefenseSpec | None] = [None, *cfg.defense.defenses]
    outcomes = defense_sweep(cfg, data.version, specs, ctx, images, labels, baseline)
    results: list[DefenseResult] = []
    run_ids: dict[str, str] = {}
    failed: dict[str, str] = {}
    index: dict[str, Any] = {}
    with atomic_dir(DEFENDED_DIR) as defended_dir:
        for spec, outcome in zip(specs, outcomes, strict=True):
            key, kind = ("undefended", "none") if spec is None else (spec.key, spec.kind)
            run_tags = tags | {"medsec.defense": key, "medsec.defense.kind": kind,
                               "medsec.defense.name": spec.name if spec else "none",
                               "medsec.defense.status": "ok" if outcome.ok else "failed"}
            if not outcome.ok:  # one FAILED run with the error line; the sweep goes on
                failed[key] = str(outcome.error)
                run_ids[key] = log_failed_defense(cfg, data.version, run_tags, outcome.error,
                                                  f"defense-{key}-{data.name}-{cfg.model.name}")
                continue
            defense, result = outcome.value.defense, outcome.value.result
            with tracked_run("defense", cfg, data.version, tags=run_tags,
                             run_name=f"defense-{key}-{data.name}-{cfg.model.name}") as run:
                log_epochs(outcome.value.epochs)
                log_defense_result(result, spec, results[0] if results else None)
                saved = save_defended(defense, defended_dir, images, data.name)  # @robust
            results.append(result)
            run_ids[key] = run.info.run_id
            if saved is not None:
                index[key] = {"path": str(DEFENDED_DIR / saved.name),
                              "defense": defense.meta["defense_name"],
                              "params": defense.meta["defense_params"]}
        write_json(defended_dir / "index.json", index)
    title = f"Defense scorecard: {data.name} / {cfg.model.name}"
    status = failed_section(failed) + markdown_section(skipped, "Defenses")
    write_text(SCORECARD, scorecard_markdown(results, cfg.defense.eval, title) + status)
    metrics = {r.name: r.metrics for r in results}
    write_metrics(DEFENSE_METRICS, metrics | {s.entry: s.row() for s in skipped})
    with tracked_run("defense", cfg, data.version, run_id=run_ids["undefended"]):
        log_text(scorecard_markdown(results, cfg.defense.eval, title, costs=True) + status,
                 "defense/scorecard.md")
    return {"run_ids": run_ids, "metrics": metrics,
            "flagged": [r.name for r in results if r.flagged],
            "status": {key: "ok" for key in metrics} | {k: f"failed: {v}"
                                                       for k, v in failed.items()}
            | {s.entry: s.row()["status"] for s in skipped},
            "not_applicable": [s.row() for s in skipped]}


def defense_sweep(cfg: MedSecConfig, data_version: str, specs: list[DefenseSpec | None],
                  ctx: BuildContext, images: Tensor, labels: Tensor,
                  baseline: nn.Module) -> list[Outcome]:
    """Every defense (None: the undefended model) built and scored as its own task on the
    configured runner (``runner``), retried, cached on (spec, defense/train/model/dataset/DP
    sections, seed, data version, model hash), results persisted under
    ``.prefect/results``. One outcome per spec; the undefended model must succeed."""
    fixed = (cfg.defense.model_dump(mode="json", exclude={"defenses"}),
             cfg.model_dump(mode="json", include={"seed", "dataset", "model", "train"}),
             cfg.privacy.dp.model_dump(mode="json"), data_version, model_digest(baseline))

    def key(params: dict) -> tuple:
        spec = params["spec"]
        return (None if spec is None else spec.model_dump(mode="json"), *fixed)

    keys = ["undefended" if spec is None else spec.key for spec in specs]
    with sweep_runner(cfg.runner) as runner:
        task = sweep_task(defense_task, key, ".", cfg.runner.retries)
        futures = runner.map(task, {"key": keys, "spec": specs, "ctx": unmapped(ctx),
                                    "images": unmapped(images), "labels": unmapped(labels),
                                    "cfg": unmapped(cfg), "baseline": unmapped(baseline)})
        done = outcomes(futures)
    if not done[0].ok:
        raise RuntimeError(f"the undefended model could not be scored: {done[0].error}")
    return done


class _DefenseFailed(Exception):
    """Ends a failed defense's MLflow run as FAILED (raised and caught here)."""


def log_failed_defense(cfg: MedSecConfig, data_version: str, tags: dict[str, str],
                       error: str | None, run_name: str, stage: str = "defense",
                       nested: bool = False) -> str:
    """One run for a sweep item that failed (a defense; ``stage`` e.g. a privacy sweep
    point), ended FAILED, with ``medsec.<stage>.error``."""
    try:
        with tracked_run(stage, cfg, data_version, run_name=run_name, nested=nested,
                         tags=tags | {f"medsec.{stage}.error": str(error)}) as run:
            raise _DefenseFailed
    except _DefenseFailed:
        pass
    return run.info.run_id


def failed_section(failed: dict[str, str]) -> str:
    """Markdown lines naming each failed defense and its error ('' when none failed)."""
    if not failed:
        return ""
    rows = "".join(f"| {key} | failed: {error} |\n" for key, error in failed.items())
    return ("\n## Defenses that failed (not scored; the sweep went on)\n\n"
            "| defense | status |\n|---|---|\n" + rows)


if __name__ == "__main__":
    defense_flow()
