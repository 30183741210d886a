"""Benchmark flow: the stages of the table marked ``in_benchmark`` (data -> validate -> train ->
evaluate -> attack), in order, for one config, isolated in a run directory of its own."""

from __future__ import annotations

import inspect
from pathlib import Path

from prefect import flow

from flows import resolve_flow
from flows.outputs import new_run_dir
from medsec.stages.pipeline import benchmark_stages
from tasks.common import load_config_task
from tasks.runners import check_runner
from tasks.tracking import tracked_run


@flow(name="benchmark")
def benchmark_flow(
    preset: str = "default",
    dataset: str | None = None,
    model: str | None = None,
    config: str | None = None,
    overrides: list[str] | None = None,
    out: str | None = None,
) -> dict:
    """Run every benchmark stage in order; ``dataset``/``model`` override the preset's choices.

    Every stage writes under ``out`` (default: a new ``runs/<UTC time>-<pid>-<hex>/``), never
    the DVC outputs; the checkpoint goes from train to the later stages by explicit path. One
    MLflow run per stage, each a child of one ``pipeline-<run dir>`` run.
    """
    items = list(overrides or [])
    if dataset:
        items.append(f"dataset.name={dataset}")
    if model:
        items.append(f"model.name={model}")
    run_dir = Path(out) if out else new_run_dir()
    args: dict = {"config": config, "preset": preset, "overrides": items, "out": str(run_dir)}
    cfg = load_config_task(config, preset, items)
    check_runner(cfg.runner)  # an unreachable Dask scheduler: one clear error before any stage
    results: dict[str, dict] = {}
    with tracked_run("pipeline", cfg, tags={"medsec.run_dir": str(run_dir)},
                     run_name=f"pipeline-{run_dir.name}") as parent:
        for stage in benchmark_stages():
            flow_fn = resolve_flow(stage.flow)
            accepted = inspect.signature(flow_fn.fn).parameters
            results[stage.name] = flow_fn(**{k: v for k, v in args.items()
                                             if k in accepted or k not in ("checkpoint", "info")})
            if stage.name == "train":  # later stages take the checkpoint by explicit path
                args |= {"checkpoint": results["train"]["checkpoint"],
                         "info": results["train"]["info"]}
    return {"pipeline_run_id": parent.info.run_id, "run_dir": str(run_dir),
            "validation": results.get("validate"), "run_id": results["train"]["run_id"],
            "test": results["evaluate"], "attack_run_id": results["attack"]["run_id"],
            "attack": results["attack"]["metrics"]}


if __name__ == "__main__":
    benchmark_flow()
