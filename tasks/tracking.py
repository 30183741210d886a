"""The one place that talks to MLflow (tracking contract of the design doc).

Tracking URI: ``$MEDSEC_TRACKING_URI`` > ``tracking.tracking_uri`` > the project store
``sqlite:///<repo>/mlflow/mlflow.db`` with artifacts in ``<repo>/mlflow/artifacts``. ``<repo>`` is
the checkout root (:func:`repo_root`), not the cwd: ``dvc exp run --temp/--queue`` run in a copy
under ``<repo>/.dvc/tmp/exps/`` and must still log to the checkout's store. Relative SQLite paths
are taken from the checkout root.

Run lifecycle: runs opened while another is active are its children (a stage under the pipeline
run); a run ends FAILED when its body raises an error, KILLED on a signal or interrupt; runs of
this host left RUNNING by a dead process are marked FAILED when the next run starts.
"""

from __future__ import annotations

import fcntl
import math
import os
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from medsec.config import MedSecConfig, config_to_dict, flatten
from medsec.io import json_safe

TRACKING_ENV = "MEDSEC_TRACKING_URI"


def repo_root(start: Path | None = None) -> Path:
    """The checkout root: the outermost ancestor of ``start`` (default: the cwd) that holds
    ``.dvc/config`` (a ``dvc exp run --temp`` copy in ``<repo>/.dvc/tmp/exps/<tmp>/`` has one
    too, its checkout is further out); ``start`` itself outside any DVC checkout."""
    here = (start or Path.cwd()).resolve()
    roots = [p for p in (here, *here.parents) if (p / ".dvc" / "config").is_file()]
    return roots[-1] if roots else here


def _sqlite_path(uri: str) -> Path | None:
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):])
    return None


def resolve_tracking_uri(cfg: MedSecConfig | None = None) -> str:
    """The absolute tracking URI (see module docstring)."""
    uri = os.environ.get(TRACKING_ENV) or (cfg.tracking.tracking_uri if cfg else None)
    if not uri:
        uri = f"sqlite:///{repo_root() / 'mlflow' / 'mlflow.db'}"
    path = _sqlite_path(uri)
    if path is not None:
        path = (repo_root() / path.expanduser()).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{path}"
    return uri


def artifact_root(uri: str) -> str | None:
    """``file://`` artifact root next to a SQLite store (None for remote servers)."""
    path = _sqlite_path(uri)
    if path is None:
        return None
    return (path.parent / "artifacts").resolve().as_uri()


_REACHED: set[str] = set()


def check_tracking_server(cfg: MedSecConfig | None = None, timeout: float = 5.0) -> str:
    """The resolved tracking URI; for an ``http(s)://`` server, ConfigError (one line) unless
    its ``/health`` answers within ``timeout`` seconds. Called before any work starts (the CLI,
    and the first MLflow call of a process): MLflow's own client would retry for minutes."""
    import urllib.request

    from medsec.errors import ConfigError

    uri = resolve_tracking_uri(cfg)
    if not uri.startswith(("http://", "https://")) or uri in _REACHED:
        return uri
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as response:
            ok = response.status == 200
    except OSError as exc:
        ok, reason = False, getattr(exc, "reason", exc)
    else:
        reason = "no OK from /health"
    if not ok:
        raise ConfigError(f"tracking server {uri} is unreachable ({reason}); start it with "
                          f"`medsec server up` or change {TRACKING_ENV}/tracking.tracking_uri")
    _REACHED.add(uri)
    return uri


def _mlflow(cfg: MedSecConfig | None):
    import mlflow

    uri = check_tracking_server(cfg)
    mlflow.set_tracking_uri(uri)
    return mlflow, uri


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Exclusive lock on ``<db>.lock`` beside a SQLite store: two processes creating the store
    (schema migrations) or the same experiment at once would otherwise collide."""
    path = _sqlite_path(uri)
    if path is None:
        yield
        return
    with open(f"{path}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_experiment(name: str, cfg: MedSecConfig | None = None) -> str:
    """Experiment id of ``name``, created with an explicit artifact location if needed."""
    from mlflow.exceptions import MlflowException

    mlflow, uri = _mlflow(cfg)
    with _store_lock(uri):
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return mlflow.create_experiment(name, artifact_location=artifact_root(uri))
        except MlflowException as exc:  # another process made it meanwhile
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":  # (a server: no file lock)
                raise
            return mlflow.get_experiment_by_name(name).experiment_id


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _data_source_tag(cfg: MedSecConfig) -> str:
    """``medsec.data_source``: medmnist, phantoms, folder, manifest, dicom, nifti or pacs."""
    from medsec.stages.data import data_source_tag

    return data_source_tag(cfg)


def _effective_params(cfg: MedSecConfig) -> dict[str, Any]:
    """Params logged as used rather than as configured: ``dataset.image_size`` (px); no
    absolute data path (:func:`medsec.stages.data.logged_dataset_params`)."""
    from medsec.stages.data import logged_dataset_params

    return logged_dataset_params(cfg)


def contract_tags(
    stage: str, cfg: MedSecConfig, data_version: str | None, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """Tags every run carries (``medsec.stage``, ``medsec.dataset``, ``medsec.model``, ...)."""
    commit = git_commit()
    tags = {
        "medsec.stage": stage,
        "medsec.dataset": cfg.dataset.name,
        "medsec.data_source": _data_source_tag(cfg),
        "medsec.model": cfg.model.name,
        "medsec.preset": cfg.preset,
        "medsec.git_commit": commit,
        "medsec.data_version": data_version or "unknown",
        "mlflow.source.git.commit": commit,
        "medsec.pid": str(os.getpid()),
        "medsec.host": socket.gethostname(),
    }
    tags.update(prefect_tags())
    tags.update(dvc_exp_tags())
    tags.update(extra or {})
    return tags


DVC_EXP_TAG = "medsec.dvc_exp"
DVC_EXP_BASELINE_TAG = "medsec.dvc_exp_baseline"


def dvc_exp_tags() -> dict[str, str]:
    """``medsec.dvc_exp`` (the experiment name) and ``medsec.dvc_exp_baseline`` (the commit it
    branches from) for a run started by a stage of ``dvc exp run`` (DVC sets
    ``DVC_EXP_NAME``/``DVC_EXP_BASELINE_REV`` in the stage's environment); empty otherwise.
    ``medsec report --compare A B`` resolves experiment names through them."""
    tags = {}
    if os.environ.get("DVC_EXP_NAME"):
        tags[DVC_EXP_TAG] = os.environ["DVC_EXP_NAME"]
    if os.environ.get("DVC_EXP_BASELINE_REV"):
        tags[DVC_EXP_BASELINE_TAG] = os.environ["DVC_EXP_BASELINE_REV"]
    return tags


def prefect_tags() -> dict[str, str]:
    """``medsec.prefect_flow_run_id`` (the Prefect flow run this MLflow run belongs to) and
    ``medsec.prefect_root_flow_run_id`` (its outermost parent, e.g. a deployment's run);
    empty outside a Prefect flow run."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return {}
    from prefect.runtime import flow_run

    tags = {"medsec.prefect_flow_run_id": str(context.flow_run.id)}
    try:
        tags["medsec.prefect_root_flow_run_id"] = str(flow_run.get_root_flow_run_id())
    except Exception:  # no API to ask (e.g. a flow called with .fn); the own id still links
        pass
    return tags


def link_prefect(run: Any, stage: str) -> None:
    """A table artifact ``mlflow-<stage>`` on the current Prefect flow run naming the MLflow
    run (id, experiment, stage, name); nothing outside a Prefect flow run."""
    from prefect.context import FlowRunContext

    if FlowRunContext.get() is None:
        return
    from prefect.artifacts import create_table_artifact

    key = "mlflow-" + "".join(c if c.isalnum() else "-" for c in stage.lower())
    create_table_artifact(
        table=[{"mlflow_run_id": run.info.run_id, "experiment_id": run.info.experiment_id,
                "stage": stage, "run_name": run.info.run_name}],
        key=key, description=f"MLflow run of the {stage} stage of this flow run")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_orphan_runs(experiment_id: str) -> list[str]:
    """Mark FAILED the RUNNING runs of this host whose process (``medsec.pid``) is gone (a
    ``kill -9`` leaves them so); returns their ids. Runs of other hosts are left alone."""
    import mlflow

    host = socket.gethostname()
    client = mlflow.MlflowClient()
    found = client.search_runs(
        [experiment_id], f"attributes.status = 'RUNNING' and tags.`medsec.host` = '{host}'")
    swept = []
    for run in found:
        pid = run.data.tags.get("medsec.pid", "")
        if pid.isdigit() and not _alive(int(pid)):
            client.set_tag(run.info.run_id, "medsec.end_reason",
                           f"process {pid} on {host} ended without closing the run")
            client.set_terminated(run.info.run_id, status="FAILED")
            swept.append(run.info.run_id)
    return swept


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

    Started while another run is active (or with ``nested=True``), it is that run's child. It
    ends FAILED if the body raises an error, KILLED on a signal or interrupt (a
    ``BaseException`` that is not an ``Exception``), so a crash never looks like a success.
    """
    mlflow, _ = _mlflow(cfg)
    experiment_id = ensure_experiment(cfg.tracking.experiment, cfg)
    sweep_orphan_runs(experiment_id)
    nested = nested or mlflow.active_run() is not None
    if run_id is not None:
        run = mlflow.start_run(run_id=run_id, nested=nested)
    else:
        run = mlflow.start_run(experiment_id=experiment_id, nested=nested,
                               run_name=run_name or f"{stage}-{cfg.dataset.name}-{cfg.model.name}")
        mlflow.set_tags(contract_tags(stage, cfg, data_version, tags))
        mlflow.log_params(flatten(config_to_dict(cfg)) | _effective_params(cfg))
        link_prefect(run, stage)
    try:
        yield run
    except Exception:
        mlflow.end_run(status="FAILED")
        raise
    except BaseException:
        mlflow.end_run(status="KILLED")
        raise
    mlflow.end_run(status="FINISHED")


def finite_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite scalar entries of ``metrics`` as floats (MLflow charts cannot show NaN/inf)."""
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, int | float) and math.isfinite(float(v))}


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    """Log finite scalar metrics (NaN/inf are skipped: MLflow charts cannot show them)."""
    import mlflow

    clean = finite_metrics(metrics)
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
    """Log ``data`` as strict JSON: NaN/Infinity become null, listed under ``null_reasons``."""
    import mlflow

    clean, reasons = json_safe(data)
    mlflow.log_dict(clean | ({"null_reasons": reasons} if reasons else {}), artifact_file)


def log_text(text: str, artifact_file: str) -> None:
    import mlflow

    mlflow.log_text(text, artifact_file)


def set_tags(tags: dict[str, str]) -> None:
    import mlflow

    mlflow.set_tags(tags)


DEVICE_TAG, PRECISION_TAG = "medsec.device", "medsec.precision"
"""Tags of every run that trains a model: the resolved device and precision (the report's
Device column)."""


def device_tags(meta: dict[str, Any] | None = None) -> dict[str, str]:
    """``{medsec.device, medsec.precision}`` of a trained model: ``meta["device"]`` /
    ``meta["precision"]`` (the model card of ``train_classifier``, a ``FitResult``'s fields),
    else the process default hardware resolved (``train.accelerator`` ``auto`` -> ``cpu`` or
    ``gpu``). A GPU gets its name: ``gpu (NVIDIA H200)``; DDP keeps ``x<N>`` (``cpu x2``)."""
    meta = meta or {}
    device, precision = meta.get("device"), meta.get("precision")
    if not device or not precision:
        from medsec.training.config import default_hardware
        from medsec.training.devices import resolve_accelerator

        hw = default_hardware()
        device = device or resolve_accelerator(hw.accelerator, hw.devices) + (
            f" x{hw.devices}" if hw.devices > 1 else "")
        precision = precision or str(hw.precision)
    device = str(device)
    if device.startswith("gpu") and "(" not in device:
        import torch

        if torch.cuda.is_available():
            device = f"{device} ({torch.cuda.get_device_name(0)})"
    return {DEVICE_TAG: device, PRECISION_TAG: str(precision)}


def log_training_device(meta: dict[str, Any] | None = None) -> dict[str, str]:
    """Tag the active run with :func:`device_tags` of ``meta``; returns the tags."""
    tags = device_tags(meta)
    set_tags(tags)
    return tags


def temp_artifact_dir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="medsec-artifacts-")
