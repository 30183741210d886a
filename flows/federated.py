"""Federated flow: hospitals train together with Flower; compared with centralised training."""

from __future__ import annotations

from prefect import flow

from flows.outputs import METRICS, MODELS, PLOTS, REPORTS
from flows.train import history_csv
from medsec.config import MedSecConfig
from medsec.federated.config import ROBUST_STRATEGIES
from medsec.io import write_json, write_text
from medsec.training.checkpoint import save_classifier
from tasks.common import load_config_task, load_dataset_task
from tasks.federated import (
    centralized_task,
    federated_task,
    gradient_inversion_task,
    log_round_metrics,
)
from tasks.tracking import log_artifact, log_dict, log_metrics, tracked_run

FEDERATED_CKPT = MODELS / "federated.pt"
FEDERATED_METRICS = METRICS / "federated.json"
FEDERATED_HISTORY = PLOTS / "federated_history.csv"
FEDERATED_REPORT_DIR = REPORTS / "federated"


def _tags(cfg: MedSecConfig, verification: str) -> dict[str, str]:
    fed = cfg.federated
    privacy = [name for name, on in (("client_dp", fed.client_dp.enabled),
                                     (f"central_dp_{fed.central_dp.mode}",
                                      fed.central_dp.mode != "off")) if on]
    tags = {"medsec.verification": verification, "medsec.federated.strategy": fed.strategy,
            "medsec.federated.partition": fed.partition,
            "medsec.federated.secure_aggregation": fed.secure_aggregation,
            "medsec.federated.runtime": fed.runtime, "medsec.privacy": "+".join(privacy) or "none"}
    if fed.attack.kind != "none":
        tags["medsec.attack"] = f"federated_{fed.attack.kind}"
    if fed.strategy in ROBUST_STRATEGIES:
        tags["medsec.defense"] = f"robust_aggregation_{fed.strategy}"
    return tags


@flow(name="federated")
def federated_flow(
    config: str | None = None, preset: str | None = None, overrides: list[str] | None = None,
) -> dict:
    """Write ``models/federated.pt``, ``metrics/federated.json`` and the per-round CSV."""
    cfg = load_config_task(config, preset, overrides)
    data = load_dataset_task(cfg)
    with tracked_run("federated", cfg, data.version, tags=_tags(cfg, data.verification),
                     run_name=f"federated-{cfg.dataset.name}-{cfg.federated.strategy}") as run:
        result = federated_task(cfg, data)
        log_round_metrics(result.history)
        metrics = dict(result.summary)
        if cfg.federated.compare_centralized:
            baseline = centralized_task(cfg, data)
            metrics |= baseline | {
                "acc_gap_vs_centralized": baseline["centralized_test_acc"] - metrics["test_acc"]}
        if cfg.federated.gradient_inversion.enabled:  # the server's reconstruction attack
            from medsec.privacy.gradient_inversion import inversion_metrics, write_inversion_report

            rows = gradient_inversion_task(cfg, data)
            metrics |= inversion_metrics(rows)
            for path in write_inversion_report(rows, FEDERATED_REPORT_DIR):
                log_artifact(path, "federated")
        per_round = set(result.history[-1]) if result.history else set()
        log_metrics({k: v for k, v in metrics.items() if k not in per_round})  # the rest: above
        log_dict({"partition": result.partition, "clients_last_round": result.clients},
                 "federated/partition.json")
        save_classifier(FEDERATED_CKPT, result.model, result.meta)
        log_artifact(FEDERATED_CKPT, "model")
        keys = sorted({k for row in result.history for k in row},
                      key=lambda k: (k != "round", k))
        write_text(FEDERATED_HISTORY, history_csv(result.history, keys))
        log_artifact(FEDERATED_HISTORY, "federated")
        write_json(FEDERATED_METRICS, metrics)
    return {"run_id": run.info.run_id, "metrics": metrics}


if __name__ == "__main__":
    federated_flow()
