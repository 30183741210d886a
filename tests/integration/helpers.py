"""Helpers for integration tests: copies of the repo, subprocess runs, free ports."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def env_with(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 600):
    """Run a command; on failure the assertion shows its output."""
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return proc


def copy_repo(dest: Path) -> Path:
    """Copy the tracked and untracked-but-not-ignored files of the repo to ``dest``."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO_ROOT,
        capture_output=True, check=True,
    ).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = REPO_ROOT / rel
        if src.is_file():
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    git = ["git", "-c", "user.email=t@medsec.local", "-c", "user.name=MedSec tests"]
    subprocess.run([*git, "init", "-q"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "copy"], cwd=dest, check=True)
    return dest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def require_binary(name: str) -> str:
    """Path of an OS-package server binary (Orthanc, chromium-headless-shell, initdb...).

    Skips locally when it is missing, but fails under ``MEDSEC_REQUIRE_INFRA=1`` (set by
    ``.ci/run``, which installs them), so CI can never pass by skipping."""
    import pytest

    found = shutil.which(name) or (name if Path(name).is_file() else None)
    if found:
        return found
    message = f"{name} not installed (see README: system packages)"
    if os.environ.get("MEDSEC_REQUIRE_INFRA") == "1":
        pytest.fail(message)
    pytest.skip(message)


def stop_group(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM a server started with ``start_new_session=True`` and its children; SIGKILL the
    group if it has not exited within ``timeout`` seconds."""
    import contextlib
    import signal

    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
