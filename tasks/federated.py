"""Federated-learning tasks: the federation, its centralised baseline, per-round logging."""

from __future__ import annotations

from prefect import task

from medsec.config import MedSecConfig
from medsec.data.types import LoadedDataset
from medsec.federated.simulation import FederatedResult, run_federation
from medsec.training.job import evaluate_classifier, split_for, train_classifier
from tasks.tracking import log_metrics


@task(name="federated-train")
def federated_task(cfg: MedSecConfig, data: LoadedDataset) -> FederatedResult:
    return run_federation(cfg, data)


@task(name="centralized-baseline")
def centralized_task(cfg: MedSecConfig, data: LoadedDataset) -> dict[str, float]:
    """The same model trained on all training data for ``rounds * local_epochs`` epochs
    (last epoch's weights, as the federation has no model selection)."""
    fed = cfg.federated
    train = cfg.train.model_copy(update={"epochs": fed.rounds * fed.local_epochs,
                                         "select_best": False})
    base = cfg.model_copy(update={"train": train})
    trained = train_classifier(base, data)
    ev = evaluate_classifier(trained.model, split_for(base, data, "test"), data.num_classes)
    out = {f"centralized_{k}": v for k, v in ev.metrics.items()
           if k in ("test_acc", "test_auc", "test_f1", "test_loss")}
    return out | {"centralized_epochs": float(train.epochs),
                  "centralized_seconds": trained.fit.seconds}


def log_round_metrics(history: list[dict[str, float]]) -> None:
    """Every per-round number, with ``step`` = the round (1-based)."""
    for row in history:
        log_metrics({k: v for k, v in row.items() if k != "round"}, step=int(row["round"]))
