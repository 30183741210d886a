"""The one place that talks to MLflow (tracking contract of the design doc).

Tracking URI: ``$MEDSEC_TRACKING_URI`` > ``tracking.tracking_uri`` > the project store
``sqlite:///<repo>/mlflow/mlflow.db`` with artifacts in ``<repo>/mlflow/artifacts``.
Relative SQLite paths are made absolute (``dvc exp run --temp`` runs in a copy of the repo).
"""

from __future__ import annotations

import math
import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from medsec.config import MedSecConfig, config_to_dict, flatten

TRACKING_ENV = "MEDSEC_TRACKING_URI"


def _sqlite_path(uri: str) -> Path | None:
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):])
    return None


def resolve_tracking_uri(cfg: MedSecConfig | None = None) -> str:
    """The absolute tracking URI (see module docstring)."""
    uri = os.environ.get(TRACKING_ENV) or (cfg.tracking.tracking_uri if cfg else None)
    if not uri:
        uri = f"sqlite:///{Path.cwd() / 'mlflow' / 'mlflow.db'}"
    path = _sqlite_path(uri)
    if path is not None:
        path = path.expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{path}"
    return uri


def artifact_root(uri: str) -> str | None:
    """``file://`` artifact root next to a SQLite store (None for remote servers)."""
    path = _sqlite_path(uri)
    if path is None:
        return None
    return (path.parent / "artifacts").resolve().as_uri()


def _mlflow(cfg: MedSecConfig | None):
    import mlflow

    uri = resolve_tracking_uri(cfg)
    mlflow.set_tracking_uri(uri)
    return mlflow, uri


def ensure_experiment(name: str, cfg: MedSecConfig | None = None) -> str:
    """Experiment id of ``name``, created with an explicit artifact location if needed."""
    mlflow, uri = _mlflow(cfg)
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return mlflow.create_experiment(name, artifact_location=artifact_root(uri))


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def contract_tags(
    stage: str, cfg: MedSecConfig, data_version: str | None, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """Tags every run carries (``medsec.stage``, ``medsec.dataset``, ``medsec.model``, ...)."""
    commit = git_commit()
    tags = {
        "medsec.stage": stage,
        "medsec.dataset": cfg.dataset.name,
        "medsec.model": cfg.model.name,
        "medsec.preset": cfg.preset,
        "medsec.git_commit": commit,
        "medsec.data_version": data_version or "unknown",
        "mlflow.source.git.commit": commit,
    }
    tags.update(extra or {})
    return tags


@contextmanager
def tracked_run(
    stage: str,
    cfg: MedSecConfig,
    data_version: str | None = None,
    tags: dict[str, str] | None = None,
    run_id: str | None = None,
    run_name: str | None = None,
    nested: bool = False,
) -> Iterator[Any]:
    """Start (or resume, with ``run_id``) an MLflow run tagged per the contract.

    ``nested=True`` starts a child of the active run. The run ends FAILED if the body raises,
    so a crash never looks like a success.
    """
    mlflow, _ = _mlflow(cfg)
    experiment_id = ensure_experiment(cfg.tracking.experiment, cfg)
    if run_id is not None:
        run = mlflow.start_run(run_id=run_id, nested=nested)
    else:
        run = mlflow.start_run(experiment_id=experiment_id, nested=nested,
                               run_name=run_name or f"{stage}-{cfg.dataset.name}-{cfg.model.name}")
        mlflow.set_tags(contract_tags(stage, cfg, data_version, tags))
        mlflow.log_params(flatten(config_to_dict(cfg)))
    try:
        yield run
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    mlflow.end_run(status="FINISHED")


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    """Log finite scalar metrics (NaN/inf are skipped: MLflow charts cannot show them)."""
    import mlflow

    clean = {k: float(v) for k, v in metrics.items()
             if isinstance(v, int | float) and math.isfinite(float(v))}
    if clean:
        mlflow.log_metrics(clean, step=step)


def log_params(params: dict[str, Any]) -> None:
    """Log parameters of the active run (values as strings, as MLflow stores them)."""
    import mlflow

    mlflow.log_params({k: str(v) for k, v in params.items()})


def log_figure(figure: Any, artifact_file: str) -> None:
    import matplotlib.pyplot as plt

    import mlflow

    mlflow.log_figure(figure, artifact_file)
    plt.close(figure)


def log_artifact(path: str | Path, artifact_path: str | None = None) -> None:
    import mlflow

    mlflow.log_artifact(str(path), artifact_path=artifact_path)


def log_dict(data: dict[str, Any], artifact_file: str) -> None:
    import mlflow

    mlflow.log_dict(data, artifact_file)


def log_text(text: str, artifact_file: str) -> None:
    import mlflow

    mlflow.log_text(text, artifact_file)


def set_tags(tags: dict[str, str]) -> None:
    import mlflow

    mlflow.set_tags(tags)


def temp_artifact_dir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="medsec-artifacts-")
