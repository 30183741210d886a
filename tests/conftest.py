"""Shared fixtures: isolated Prefect home, MLflow store and small synthetic data."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = (REPO_ROOT / ".." / "shared" / "datasets").resolve()
PNEUMONIA = SHARED_DATA / "pneumoniamnist.npz"

# Isolate Prefect's database and quiet telemetry before anything imports prefect.
_PREFECT_HOME = tempfile.mkdtemp(prefix="medsec-prefect-")
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
os.environ.pop("MEDSEC_DATA_DIR", None)
os.environ.pop("MEDSEC_TRACKING_URI", None)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: one intra-op thread avoids OpenMP stalls on a shared 2-core machine.
    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory) -> Path:
    """A directory with a small SYNTHETIC phantom file (96/48/48 images, 32x32)."""
    from medsec.data.phantoms import PHANTOM_FILE, write_phantoms

    directory = tmp_path_factory.mktemp("phantoms")
    write_phantoms(directory / PHANTOM_FILE, 96, 48, 48, 32, 0)
    return directory


@pytest.fixture()
def tracking_uri(tmp_path, monkeypatch) -> str:
    """A fresh real MLflow SQLite store for one test."""
    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    monkeypatch.setenv("MEDSEC_TRACKING_URI", uri)
    return uri


@pytest.fixture()
def pneumonia_path() -> Path:
    if not PNEUMONIA.is_file():
        pytest.skip(f"real dataset not available at {PNEUMONIA}")
    return PNEUMONIA
