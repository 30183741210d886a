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
    write_metrics,
)
from medsec.attacks.config import AttackSpec
from medsec.attacks.dataset import write_suite
from medsec.config import MedSecConfig
from medsec.stages.applicability import SKIPPED_TAG, tag_value
from medsec.stages.attack import applicable, check_surrogate, splits
from medsec.viz import robustness_curve_figure, scaling_attack_figure
from tasks.attack import (
    check_victim_task,
    examples_figure,
    finding_sets,
    finish_suite_task,
    load_victim_task,
    log_attack_runs,
    log_failed_attacks,
    run_attack_task,
    start_suite_task,
    strongest_points,
    surrogate_task,
)
from tasks.common import load_config_task, load_dataset_task
from tasks.runners import (
    Outcome,
    check_runner,
    model_digest,
    outcomes,
    sweep_runner,
    sweep_task,
)
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
    check_runner(cfg.runner)  # an unreachable Dask scheduler: one clear error, nothing done
    check_surrogate(cfg)
    data = load_dataset_task(cfg, at(out, PREPARED))  # out: the output root
    model, source = load_victim_task(checkpoint, info, data)
    cfg, skipped = applicable(cfg, data)  # e.g. deepfool on multi-label data: skipped, recorded
    check_victim_task(cfg, data, model, checkpoint)  # before any run or file: clear errors
    not_applicable = {s.entry: s.row() for s in skipped}
    tags = {
        SKIPPED_TAG: tag_value(skipped),
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
        status = attack_sweep(cfg, data.version, train, model, suite, out)
        points = [point for outcome in status.values() if outcome.ok for point in outcome.value]
        result = finish_suite_task(cfg, model, suite, points, surrogate)
        child_runs = log_attack_runs(cfg, data, result, source)
        child_runs += log_failed_attacks(cfg, data, status, source)
        index = write_suite(at(out, ADVERSARIAL_DIR), result, source, data,
                            cfg.attack.save_adversarial)
        metrics = result.metrics() | {"attacks_failed": sum(not o.ok for o in status.values())}
        if not_applicable:  # a row per skipped attack in the scorecard: a status, no number
            metrics["not_applicable"] = not_applicable
        write_metrics(at(out, ATTACK_METRICS), metrics)
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
            names, shown = list(data.class_names), (demo.source_labels, demo.target_labels,
                                                    demo.pred)
            if demo.source_labels.ndim == 2:  # multi-label: titled by finding sets
                names, shown = finding_sets(names, *shown)
            log_figure(
                scaling_attack_figure(
                    demo.source,
                    demo.adversarial,
                    demo.downscaled,
                    demo.target,
                    *shown,
                    names,
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
                "status": {spec_id: o.status for spec_id, o in status.items()}
                | {key: row["status"] for key, row in not_applicable.items()},
                "not_applicable": list(not_applicable.values()),
            },
            "robustness/summary.json",
        )
    return {"run_id": run.info.run_id, "child_run_ids": child_runs, "metrics": metrics,
            "status": {spec_id: o.status for spec_id, o in status.items()}
            | {key: row["status"] for key, row in not_applicable.items()},
            "not_applicable": list(not_applicable.values())}


def attack_sweep(cfg: MedSecConfig, data_version: str, train, model, suite,
                 out: str) -> dict[str, Outcome]:
    """Every attack spec as its own task on the configured runner (``runner``), retried,
    cached on (spec, attack and dataset sections, data version, model hash), results
    persisted under ``<out>/.prefect/results``. Spec id -> outcome; a failed spec does not
    stop the others (the worst case then covers the completed ones; the status says so)."""
    section = cfg.attack.model_dump(mode="json", exclude={"attacks"})
    fixed = (section, cfg.dataset.model_dump(mode="json"), data_version, model_digest(model))

    def key(params: dict) -> tuple:
        return (params["spec"].model_dump(mode="json"), *fixed)

    specs: list[AttackSpec] = list(cfg.attack.attacks)
    with sweep_runner(cfg.runner, out) as runner:
        task = sweep_task(run_attack_task, key, out, cfg.runner.retries)
        futures = runner.map(task, {"spec": specs, "cfg": unmapped(cfg), "train": unmapped(train),
                                    "model": unmapped(model), "suite": unmapped(suite)})
        done = outcomes(futures)
    if not any(o.ok for o in done):
        raise RuntimeError(f"every attack failed; {specs[0].id}: {done[0].error}")
    return {spec.id: o for spec, o in zip(specs, done, strict=True)}


if __name__ == "__main__":
    attack_flow()
