"""The Flower apps of ``federated_app/`` (``flwr run federated_app ...``): each hospital a
``flower-supernode`` process, the server a ``ServerApp`` process of the SuperLink.

The apps are :func:`medsec.federated.apps.deployment_apps` around the MedSec config loader
(``medsec.stages.federated.deployment``). When the federation is over the server logs the
federated stage's MLflow run as the simulated stage does (``flows/federated.py``): the same
tags (``medsec.federated.runtime=deployment``), per-round metrics with ``step`` = round, the
final numbers (with the centralised baseline when ``federated.compare_centralized``), the
partition, the global model and the history, into the store of ``MEDSEC_TRACKING_URI`` (or
the project's) as seen by the SuperLink's processes.

``server_app`` and ``client_app`` are plain module-level names: Flower checks the
``pyproject.toml`` references statically (a tuple assignment is not found).
"""

from __future__ import annotations

import shlex
from pathlib import Path

from flwr.app import Context

from medsec.config import load_config
from medsec.federated.apps import DEFAULT_OUTPUT, Deployment, deployment_apps
from medsec.federated.simulation import FederatedResult
from medsec.stages import federated as stage
from tasks.federated import federated_tags, federation_metrics, log_federation
from tasks.tracking import tracked_run


def track_deployment(context: Context, run: Deployment, result: FederatedResult) -> None:
    """One MLflow run (``medsec.stage=federated``) for a finished deployed federation."""
    rc = context.run_config
    cfg = load_config(str(rc.get("config", "params.yaml")),
                      overrides=shlex.split(str(rc.get("overrides", ""))))
    out = Path(str(rc.get("output-dir", DEFAULT_OUTPUT)))
    baseline = (stage.centralized_baseline(cfg, run.data) if cfg.federated.compare_centralized
                else None)
    tags = federated_tags(cfg, run.data.verification) | {"medsec.federated.runtime": "deployment"}
    with tracked_run("federated", cfg, run.data.version, tags=tags,
                     run_name=f"federated-{cfg.dataset.name}-{cfg.federated.strategy}"):
        log_federation(result, federation_metrics(result, baseline), out / "federated.pt",
                       [out / "history.json"])


server_app = deployment_apps(stage.deployment, report=track_deployment)[0]
client_app = stage.client_app
