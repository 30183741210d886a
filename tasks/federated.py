"""Federated-learning tasks: the federation, its centralised baseline, per-round logging;
the federated stage's tags and tracking, shared by the simulation and the deployment."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from prefect import task
from prefect.cache_policies import NO_CACHE

from medsec.config import MedSecConfig
from medsec.data.types import LoadedDataset
from medsec.federated.config import ROBUST_STRATEGIES
from medsec.federated.simulation import FederatedResult
from medsec.privacy.gradient_inversion import InversionRow
from medsec.stages import federated as stage
from tasks.tracking import log_artifact, log_dict, log_metrics, log_training_device

if TYPE_CHECKING:
    from medsec.privacy.canary_audit import CanaryAudit
    from medsec.privacy.recipe_audit import AuditPool, RecipeAuditResult


@task(name="federated-train")
def federated_task(cfg: MedSecConfig, data: LoadedDataset) -> FederatedResult:
    return stage.run(cfg, data)


@task(name="centralized-baseline")
def centralized_task(cfg: MedSecConfig, data: LoadedDataset) -> dict[str, float]:
    """The same model trained on all the data (see ``stage.centralized_baseline``)."""
    return stage.centralized_baseline(cfg, data)


@task(name="federated-gradient-inversion")
def gradient_inversion_task(cfg: MedSecConfig, data: LoadedDataset) -> list[InversionRow]:
    """The server's gradient inversion of one client update (``stage.gradient_inversion``)."""
    return stage.gradient_inversion(cfg, data)


@task(name="federated-canary-audit")
def canary_task(cfg: MedSecConfig, data: LoadedDataset) -> CanaryAudit | None:
    """One-run DP audit of hospital 0's client DP (``stage.canary_audit``; None when off)."""
    return stage.canary_audit(cfg, data)


@task(name="federated-recipe-audit", cache_policy=NO_CACHE,
      task_run_name="federated-recipe-audit-{label}")
def recipe_audit_task(label: str, cfg: MedSecConfig, data: LoadedDataset, pool: AuditPool
                      ) -> tuple[RecipeAuditResult, dict[str, float]]:
    """Recipe audit of the federation ``cfg`` (``label``: e.g. ``fedavg``,
    ``fedavg-client-dp-eps8``; ``stage.recipe_audit``), its reference federations mapped on
    the configured runner like the privacy stage's reference models; returns the audit and
    the target's test metrics."""
    from tasks.privacy import mapped_references
    from tasks.train import evaluate_task

    result = stage.recipe_audit(cfg, data, pool, runner=mapped_references(cfg.runner))
    return result, evaluate_task(cfg, data, result.target.model, "test").metrics


def log_round_metrics(history: list[dict[str, float]]) -> None:
    """Every per-round number, with ``step`` = the round (1-based)."""
    for row in history:
        log_metrics({k: v for k, v in row.items() if k != "round"}, step=int(row["round"]))


def federated_tags(cfg: MedSecConfig, verification: str) -> dict[str, str]:
    """The federated stage's run tags: strategy, partition, secure aggregation, runtime,
    privacy mechanisms, and the attack / robust aggregation when configured."""
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


def federation_metrics(result: FederatedResult, baseline: dict[str, float] | None
                       ) -> dict[str, float]:
    """The federation's final numbers, with the centralised baseline and the accuracy gap
    (centralised minus federated) when there is one."""
    metrics = dict(result.summary)
    if baseline is not None:
        metrics |= baseline | {
            "acc_gap_vs_centralized": baseline["centralized_test_acc"] - metrics["test_acc"]}
    return metrics


def log_federation(result: FederatedResult, metrics: dict[str, float],
                   checkpoint: Path, artifacts: list[Path] = ()) -> None:
    """A federation in the active run: per-round numbers (``step`` = round), ``metrics``
    (final numbers; those already logged per round are skipped), the partition, the global
    model saved to ``checkpoint`` (artifact ``model/``), ``artifacts`` (``federated/``) and the
    clients' hardware (``medsec.device``/``medsec.precision``: the process default), the same
    for the simulation and a deployment."""
    from medsec.training.checkpoint import save_classifier

    log_training_device()
    log_round_metrics(result.history)
    per_round = set(result.history[-1]) if result.history else set()
    log_metrics({k: v for k, v in metrics.items() if k not in per_round})
    log_dict({"partition": result.partition, "clients_last_round": result.clients},
             "federated/partition.json")
    save_classifier(checkpoint, result.model, result.meta)
    log_artifact(checkpoint, "model")
    for path in artifacts:
        log_artifact(path, "federated")
