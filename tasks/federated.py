"""Federated-learning tasks: the federation, its centralised baseline, per-round logging."""

from __future__ import annotations

from prefect import task

from medsec.config import MedSecConfig
from medsec.data.types import LoadedDataset
from medsec.federated.simulation import FederatedResult
from medsec.privacy.gradient_inversion import InversionRow
from medsec.stages import federated as stage
from tasks.tracking import log_metrics


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


def log_round_metrics(history: list[dict[str, float]]) -> None:
    """Every per-round number, with ``step`` = the round (1-based)."""
    for row in history:
        log_metrics({k: v for k, v in row.items() if k != "round"}, step=int(row["round"]))
