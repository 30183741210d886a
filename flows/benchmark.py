"""Benchmark flow: the whole pipeline (validate -> train -> evaluate -> attack) for one config."""

from __future__ import annotations

from prefect import flow

from flows.attack import attack_flow
from flows.evaluate import evaluate_flow
from flows.train import train_flow
from flows.validate import validate_flow


@flow(name="benchmark")
def benchmark_flow(
    preset: str = "default",
    dataset: str | None = None,
    model: str | None = None,
    config: str | None = None,
    overrides: list[str] | None = None,
) -> dict:
    """Run every stage in order; ``dataset``/``model`` override the preset's choices."""
    items = list(overrides or [])
    if dataset:
        items.append(f"dataset.name={dataset}")
    if model:
        items.append(f"model.name={model}")
    args = {"config": config, "preset": preset, "overrides": items}
    validation = validate_flow(**args)
    trained = train_flow(**args)
    evaluation = evaluate_flow(**args)
    attacked = attack_flow(**args)
    return {"validation": validation, "run_id": trained["run_id"], "test": evaluation,
            "attack_run_id": attacked["run_id"], "attack": attacked["metrics"]}


if __name__ == "__main__":
    benchmark_flow()
