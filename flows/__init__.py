"""Prefect flows: the pipeline steps; DVC stages and the CLI call the same flows."""

import importlib
import os
from pathlib import Path
from typing import Any

# Quiet, local defaults for Prefect (overridable by the environment).
os.environ.setdefault("PREFECT_HOME", str(Path.cwd() / ".prefect"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")


def resolve_flow(spec: str) -> Any:
    """The flow named ``"module:function"`` in the stage table (medsec/stages/pipeline.py)."""
    module, func = spec.split(":")
    return getattr(importlib.import_module(module), func)
