"""A private temporary Prefect API server that dies with the process that started it.

Without ``PREFECT_API_URL`` Prefect starts its own temporary server as a subprocess and stops it
at exit, but a ``kill -9`` of the parent leaves it running for ever. :func:`prefect_server`
starts the same server (uvicorn on Prefect's app factory, the settings Prefect gives its own)
as a child that the kernel sends SIGTERM when the parent dies (``PR_SET_PDEATHSIG``, Linux),
and points ``PREFECT_API_URL`` at it (Prefect's settings too when Prefect is already imported).
Call it from the main thread: the death signal follows the thread that started the child.
"""

from __future__ import annotations

import ctypes
import fcntl
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

PR_SET_PDEATHSIG = 1
PORT_IN_USE = 3  # uvicorn's exit code when the port is taken


def _die_with_parent() -> None:  # runs in the child, between fork and exec
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(port: int) -> subprocess.Popen:
    spec = importlib.util.find_spec("prefect")
    assert spec is not None and spec.origin is not None, "prefect is not installed"
    env = dict(os.environ, PREFECT_UI_ENABLED="0", PREFECT__SERVER_EPHEMERAL="1",
               PREFECT__SERVER_FINAL="1")
    cmd = [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(spec.origin).parent.parent),
           "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1",
           "--port", str(port), "--log-level", "error", "--lifespan", "on"]
    preexec = _die_with_parent if sys.platform.startswith("linux") else None
    return subprocess.Popen(cmd, env=env, preexec_fn=preexec, stdin=subprocess.DEVNULL)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _drain_prefect() -> None:
    """Send Prefect's queued events and logs while the server still listens."""
    for module, name in (("prefect.events.worker", "EventsWorker"),
                         ("prefect.logging.handlers", "APILogWorker")):
        if module in sys.modules:
            getattr(sys.modules[module], name).drain_all(timeout=10)


@contextmanager
def prefect_server(timeout: float = 120.0) -> Iterator[str | None]:
    """Yield the API URL of a fresh private server (None, starting nothing, when
    ``PREFECT_API_URL`` is already set); the server is stopped on exit."""
    if os.environ.get("PREFECT_API_URL"):
        yield None
        return
    home = Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect")).expanduser()
    home.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        lock = stack.enter_context(open(home / "medsec-server.lock", "a"))
        fcntl.flock(lock, fcntl.LOCK_EX)  # one server at a time migrates a shared database
        process, url = _start_healthy(timeout)
        stack.callback(_stop, process)
        fcntl.flock(lock, fcntl.LOCK_UN)
        os.environ["PREFECT_API_URL"] = url
        stack.callback(os.environ.pop, "PREFECT_API_URL", None)
        if "prefect.settings" in sys.modules:  # imported settings no longer read the env
            from prefect.settings import PREFECT_API_URL, temporary_settings

            stack.enter_context(temporary_settings(updates={PREFECT_API_URL: url}))
        yield url


def _start_healthy(timeout: float) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    process = _start(port)
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + timeout
    while not _healthy(url):
        if process.poll() == PORT_IN_USE:
            port = _free_port()
            process, url = _start(port), f"http://127.0.0.1:{port}/api"
        elif process.poll() is not None or time.monotonic() > deadline:
            _stop(process)
            raise RuntimeError(f"the temporary Prefect server did not start (exit code "
                               f"{process.poll()}); set PREFECT_API_URL to use another")
        time.sleep(0.1)
    return process, url


def _stop(process: subprocess.Popen) -> None:
    _drain_prefect()
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def main(argv: list[str]) -> int:
    """``python -m flows.server CMD ...``: run CMD (e.g. ``dvc repro``) with ONE private Prefect
    server for all the stages it starts (each would otherwise start and migrate its own, ~6 s
    of CPU and 8-17 s of wall time per stage); returns CMD's exit code."""
    if not argv:
        print("usage: python -m flows.server COMMAND [ARGS...]", file=sys.stderr)
        return 2
    with prefect_server(timeout=300.0):  # once per job: a loaded machine may need long
        return subprocess.call(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
