"""Attack flow: evasion attacks on the trained classifier; robustness scorecard, adversarial
datasets (``outputs/adversarial``), MLflow parent run + one child run per attack."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, unmapped

from flows.outputs import (
    CLASSIFIER_CKPT,
    CLASSIFIER_INFO,
    METRICS,
    PLOTS,
    PREPARED,
    at,
    write_curve,
)
from medsec.attacks.dataset import write_suite
from medsec.io import write_json
from medsec.stages.attack import check_surrogate, splits
from medsec.viz import robustness_curve_figure, scaling_attack_figure
from tasks.attack import (
    check_victim_task,
    examples_figure,
    finish_suite_task,
    load_victim_task,
    log_attack_runs,
    run_attack_task,
    start_suite_task,
    strongest_points,
    surrogate_task,
)
from tasks.common import load_config_task, load_dataset_task
from tasks.tracking import (
    log_artifact,
    log_dict,
    log_figure,
    log_metrics,
    set_tags,
    tracked_run,
)

ADVERSARIAL_DIR = Path("outputs") / "adversarial"
ATTACK_METRICS = METRICS / "attack.json"
ROBUSTNESS_CSV = PLOTS / "robustness_curve.csv"
ROBUSTNESS_PNG = PLOTS / "robustness_curve.png"


@flow(name="attack")
def attack_flow(
    config: str | None = None,
    preset: str | None = None,
    overrides: list[str] | None = None,
    checkpoint: str = str(CLASSIFIER_CKPT),
    info: str = str(CLASSIFIER_INFO),
    out: str = ".",
) -> dict:
    """Write ``outputs/adversarial/``, ``metrics/attack.json`` and the robustness curve
    (``plots/robustness_curve.{csv,png}``); log them to MLflow (stage ``attack``)."""
    cfg = load_config_task(config, preset, overrides)
    check_surrogate(cfg)
    data = load_dataset_task(cfg, at(out, PREPARED))  # out: the output root
    model, source = load_victim_task(checkpoint, info, data)
    check_victim_task(cfg, data, model, checkpoint)  # before any run or file: clear errors
    tags = {
        "medsec.attack": "suite",
        "medsec.verification": data.verification,
        "medsec.source_run_id": str(source["mlflow_run_id"]),
        "medsec.checkpoint_md5": source["checkpoint_md5"],
    }
    with tracked_run(
        "attack",
        cfg,
        data.version,
        tags=tags,
        run_name=f"attack-{data.name}-{source['model_name']}",
    ) as run:
        surrogate = surrogate_task(cfg, data) if cfg.attack.transfer is not None else None
        test, train = splits(cfg, data)
        suite = start_suite_task(cfg, test, model, surrogate)
        runs = run_attack_task.map(
            cfg.attack.attacks, unmapped(cfg), unmapped(train), unmapped(model), unmapped(suite)
        )  # one task per spec; .result() raises if any failed: no partial worst case
        points = [point for future in runs for point in future.result()]
        result = finish_suite_task(cfg, model, suite, points, surrogate)
        child_runs = log_attack_runs(cfg, data, result, source)
        index = write_suite(at(out, ADVERSARIAL_DIR), result, source, data,
                            cfg.attack.save_adversarial)
        metrics = result.metrics()
        write_json(at(out, ATTACK_METRICS), metrics)
        curve = robustness_curve_figure(
            result.curve_rows(), f"{data.name} / {source['model_name']}"
        )
        write_curve(result.curve_rows(), "robust_acc", at(out, ROBUSTNESS_CSV),
                    at(out, ROBUSTNESS_PNG), curve)
        log_figure(curve, "robustness/robustness_curve.png")
        log_figure(
            examples_figure(
                result,
                strongest_points(result),
                list(data.class_names),
                f"{data.name}: each attack at its largest budget",
            ),
            "robustness/examples.png",
        )
        demo = result.image_scaling
        if demo is not None:
            log_figure(
                scaling_attack_figure(
                    demo.source,
                    demo.adversarial,
                    demo.downscaled,
                    demo.target,
                    demo.source_labels,
                    demo.target_labels,
                    demo.pred,
                    list(data.class_names),
                ),
                "robustness/image_scaling.png",
            )
        log_metrics(result.metrics(timings=True))
        set_tags({"medsec.gradient_masking": "; ".join(result.masking_flags)[:4000] or "none"})
        log_artifact(at(out, ATTACK_METRICS), "robustness")
        log_artifact(at(out, ROBUSTNESS_CSV), "robustness")
        log_dict(
            {
                "datasets": index,
                "worst_case": result.worst_case,
                "transfer": result.transfer,
                "gradient_masking_flags": result.masking_flags,
            },
            "robustness/summary.json",
        )
    return {"run_id": run.info.run_id, "child_run_ids": child_runs, "metrics": metrics}


if __name__ == "__main__":
    attack_flow()
