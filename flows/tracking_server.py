"""``medsec server up|down|status``: an MLflow tracking server on PostgreSQL, on 127.0.0.1.

``up`` creates (first time) and starts a private PostgreSQL cluster from the OS packages
(``initdb``/``pg_ctl`` from ``$MEDSEC_PGBIN``, default ``/usr/lib/postgresql/15/bin``; run as
user ``postgres`` when we are root, since ``initdb`` refuses root) listening on 127.0.0.1 and a
unix socket in the state directory only, then ``mlflow server`` backed by it
(``postgresql+psycopg://``) with proxied artifacts (``--artifacts-destination``: clients upload
and download through the server, never touching its disk). Both run detached, in sessions of
their own, so they outlive the command; ``down`` stops both. Ports are free ones chosen on first
start and reused while free. Everything lives in the state directory (default
``<repo>/.medsec/server``): ``pg/`` (cluster, socket, log), ``artifacts/``, ``mlflow.log`` and
``state.json`` (ports, pid, URI). Authentication is ``trust`` for loopback connections: a
single-user development server; put a real PostgreSQL with passwords behind a shared one.

Timings on a loaded 2-core machine: first ``up`` (initdb, migrations) ~10 s, later ~7 s;
``down`` ~3 s.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from flows.server import _free_port, _healthy
from medsec.errors import ConfigError

PGBIN_ENV = "MEDSEC_PGBIN"
DEFAULT_PGBIN = "/usr/lib/postgresql/15/bin"
STATE_FILE = "state.json"
DATABASE = "mlflow"


@dataclass
class ServerState:
    """What ``up`` started: the two ports, the MLflow server's pid, the tracking URI."""

    pg_port: int
    mlflow_port: int
    mlflow_pid: int

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def backend_uri(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.pg_port}/{DATABASE}"


def default_state_dir() -> Path:
    """``<repo>/.medsec/server`` (git-ignored)."""
    from tasks.tracking import repo_root

    return repo_root() / ".medsec" / "server"


def _pgbin() -> Path:
    path = Path(os.environ.get(PGBIN_ENV, DEFAULT_PGBIN))
    if not (path / "initdb").is_file():
        raise ConfigError(f"PostgreSQL binaries not found in {path} (apt-get install "
                          f"postgresql, or set {PGBIN_ENV} to the folder holding initdb)")
    return path


def _as_postgres() -> list[str]:
    """Command prefix: ``runuser -u postgres --`` when root (initdb refuses root), else none."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _pg(cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    out = subprocess.run([*_as_postgres(), *cmd], capture_output=True, text=True,
                         timeout=timeout, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        last = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ConfigError(f"{Path(cmd[0]).name} failed: {last[0]}")
    return out


def _prepare_pg_dir(pg_dir: Path) -> None:
    """Make ``pg_dir`` and give it to user postgres when we are root; every parent must be
    traversable by that user (e.g. not under a 0700 home or pytest's 0700 temp root)."""
    pg_dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return
    owner = pwd.getpwnam("postgres")
    os.chown(pg_dir, owner.pw_uid, owner.pw_gid)
    for parent in pg_dir.resolve().parents:
        if not os.stat(parent).st_mode & 0o001:
            raise ConfigError(f"user postgres cannot enter {parent} (mode "
                              f"{oct(os.stat(parent).st_mode & 0o777)}); choose a state "
                              "directory outside it with --state-dir")


def _pg_running(pgbin: Path, data: Path) -> bool:
    out = subprocess.run([*_as_postgres(), str(pgbin / "pg_ctl"), "-D", str(data), "status"],
                         capture_output=True, text=True, timeout=30)
    return out.returncode == 0


def _start_postgres(pg_dir: Path, port: int) -> None:
    pgbin = _pgbin()
    _prepare_pg_dir(pg_dir)
    data = pg_dir / "pgdata"
    fresh = not (data / "PG_VERSION").is_file()
    if fresh:
        _pg([str(pgbin / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
             "-E", "UTF8", "--locale=C.UTF-8"])
    if not _pg_running(pgbin, data):
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {pg_dir}"
        _pg([str(pgbin / "pg_ctl"), "-D", str(data), "-l", str(pg_dir / "pg.log"), "-w",
             "-t", "60", "-o", options, "start"])
    if fresh:
        _pg([str(pgbin / "createdb"), "-h", "127.0.0.1", "-p", str(port), DATABASE])


def _stop_postgres(pg_dir: Path) -> None:
    pgbin, data = _pgbin(), pg_dir / "pgdata"
    if data.is_dir() and _pg_running(pgbin, data):
        _pg([str(pgbin / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"])


def _start_mlflow(state_dir: Path, backend_uri: str, port: int) -> subprocess.Popen:
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    cmd = [str(mlflow_bin) if mlflow_bin.is_file() else "mlflow", "server",
           "--backend-store-uri", backend_uri,
           "--artifacts-destination", str(state_dir / "artifacts"),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    with open(state_dir / "mlflow.log", "ab") as log:
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _alive(pid: int) -> bool:
    """Whether ``pid`` is still our MLflow server (not a later process that got the pid)."""
    try:
        return b"mlflow" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def read_state(state_dir: Path | None = None) -> ServerState | None:
    """The saved state, or None when the server was never started here."""
    path = (state_dir or default_state_dir()) / STATE_FILE
    if not path.is_file():
        return None
    return ServerState(**json.loads(path.read_text()))


def status(state_dir: Path | None = None) -> dict[str, object]:
    """``{"postgres": bool, "mlflow": bool, "tracking_uri": str | None}``."""
    state_dir = state_dir or default_state_dir()
    state = read_state(state_dir)
    data = state_dir / "pg" / "pgdata"
    postgres = data.is_dir() and _pg_running(_pgbin(), data)
    mlflow = bool(state and _alive(state.mlflow_pid) and _healthy(state.tracking_uri))
    return {"postgres": postgres, "mlflow": mlflow,
            "tracking_uri": state.tracking_uri if state else None}


def up(state_dir: Path | None = None, timeout: float = 120.0) -> ServerState:
    """Start PostgreSQL and the MLflow server (what is already up is kept); wait until
    ``/health`` answers. ConfigError with one line (and the log's path) when one fails."""
    state_dir = (state_dir or default_state_dir()).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    old = read_state(state_dir)
    if old and _alive(old.mlflow_pid) and _healthy(old.tracking_uri):
        return old
    pg_dir = state_dir / "pg"
    data_running = (pg_dir / "pgdata" / "PG_VERSION").is_file() and _pg_running(
        _pgbin(), pg_dir / "pgdata")
    pg_port = old.pg_port if old and (data_running or _port_free(old.pg_port)) else _free_port()
    _start_postgres(pg_dir, pg_port)
    ml_port = old.mlflow_port if old and _port_free(old.mlflow_port) else _free_port()
    state = ServerState(pg_port, ml_port, 0)
    process = _start_mlflow(state_dir, state.backend_uri, ml_port)
    state.mlflow_pid = process.pid
    (state_dir / STATE_FILE).write_text(json.dumps(asdict(state)))
    deadline = time.monotonic() + timeout
    while not _healthy(state.tracking_uri):
        if process.poll() is not None or time.monotonic() > deadline:
            _kill_group(process.pid)
            raise ConfigError(f"the MLflow server did not start (exit code {process.poll()}); "
                              f"see {state_dir / 'mlflow.log'}")
        time.sleep(0.2)
    return state


def _kill_group(pid: int, timeout: float = 20.0) -> None:
    """SIGTERM the process group of ``pid`` (the server and its uvicorn workers), SIGKILL it
    after ``timeout`` seconds."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        try:  # reap it when it is our child (a fixture's `up` in the same process)
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def down(state_dir: Path | None = None) -> bool:
    """Stop the MLflow server and PostgreSQL; False when nothing was started here."""
    state_dir = (state_dir or default_state_dir()).resolve()
    state = read_state(state_dir)
    if state is None and not (state_dir / "pg" / "pgdata").is_dir():
        return False
    if state and state.mlflow_pid > 0 and _alive(state.mlflow_pid):
        _kill_group(state.mlflow_pid)
    _stop_postgres(state_dir / "pg")
    return True
