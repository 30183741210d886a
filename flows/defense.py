"""Defense flow: build every configured defense, score it and the undefended model on the same
test images under standard and adaptive attacks; one MLflow run per defense."""

from __future__ import annotations

from typing import Any

import torch
from prefect import flow

from flows.outputs import CLASSIFIER_CKPT, CLASSIFIER_INFO, METRICS, MODELS, REPORTS
from medsec.defenses.build import undefended
from medsec.defenses.config import DefenseSpec
from medsec.defenses.evaluate import DefenseResult
from medsec.defenses.scorecard import scorecard_markdown
from medsec.io import atomic_dir, write_json, write_text
from medsec.stages import defense as stage
from tasks.attack import load_victim_task
from tasks.common import load_config_task, load_dataset_task
from tasks.defense import (
    build_defense_task,
    eval_split_task,
    evaluate_defense_task,
    log_defense_result,
    save_defended,
)
from tasks.tracking import log_text, tracked_run
from tasks.train import MlflowEpochLogger

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
    if cfg.defense.num_threads:  # training-time defenses follow train.num_threads if set
        torch.set_num_threads(cfg.defense.num_threads)
    data = load_dataset_task(cfg)
    baseline, source = load_victim_task(checkpoint, info, data)
    images, labels = eval_split_task(cfg, data, baseline, source["model_name"])
    ctx = stage.context(cfg, data, baseline, callbacks=[MlflowEpochLogger()])
    tags = {"medsec.verification": data.verification,
            "medsec.source_run_id": str(source["mlflow_run_id"]),
            "medsec.checkpoint_md5": source["checkpoint_md5"]}
    results: list[DefenseResult] = []
    run_ids: dict[str, str] = {}
    index: dict[str, Any] = {}
    with atomic_dir(DEFENDED_DIR) as defended_dir:
        specs: list[DefenseSpec | None] = [None, *cfg.defense.defenses]
        for spec in specs:
            key, kind = ("undefended", "none") if spec is None else (spec.key, spec.kind)
            run_tags = tags | {"medsec.defense": key, "medsec.defense.kind": kind,
                               "medsec.defense.name": spec.name if spec else "none"}
            with tracked_run("defense", cfg, data.version, tags=run_tags,
                             run_name=f"defense-{key}-{data.name}-{cfg.model.name}") as run:
                defense = undefended(baseline) if spec is None else build_defense_task(spec, ctx)
                result = evaluate_defense_task(defense, images, labels, cfg, baseline)
                log_defense_result(result, spec, results[0] if results else None)
                saved = save_defended(defense, defended_dir)
            results.append(result)
            run_ids[key] = run.info.run_id
            if saved is not None:
                index[key] = {"path": str(DEFENDED_DIR / saved.name),
                              "defense": defense.meta["defense_name"],
                              "params": defense.meta["defense_params"]}
        write_json(defended_dir / "index.json", index)
    title = f"Defense scorecard: {data.name} / {cfg.model.name}"
    write_text(SCORECARD, scorecard_markdown(results, cfg.defense.eval, title))
    metrics = {r.name: r.metrics for r in results}
    write_json(DEFENSE_METRICS, metrics)
    with tracked_run("defense", cfg, data.version, run_id=run_ids["undefended"]):
        log_text(scorecard_markdown(results, cfg.defense.eval, title, costs=True),
                 "defense/scorecard.md")
    return {"run_ids": run_ids, "metrics": metrics,
            "flagged": [r.name for r in results if r.flagged]}


if __name__ == "__main__":
    defense_flow()
