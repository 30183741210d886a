"""The README's Flower deployment recipe for real: a ``flower-superlink`` and one
``flower-supernode`` process per hospital on 127.0.0.1 (insecure, free ports), ``flwr run
federated_app``. One hospital's SuperNode is SIGKILLed while it trains in round 1: with
``federated.min_fit_clients=2`` the round completes with the other two, and the server logs
the federated stage's MLflow run as the simulated stage does (oracle: the simulation with the
same hospital crashing in round 1 -> same tags, metric names, artifacts, clients_ok/failed and
the same global model accuracy)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import mlflow
from tests.integration.helpers import require_binary

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
HOSPITALS = 3
KILLED = 2
TIMEOUT = 600.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(predicate, timeout: float, what: str, procs=()) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        dead = [p.args[0] for p in procs if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            raise AssertionError(f"{what}: {'exited: ' + str(dead) if dead else 'timed out'}")
        time.sleep(0.2)


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a process, its process group and every descendant (Flower's SuperExec and
    app processes start sessions of their own)."""
    import psutil

    try:
        family = [proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))]
    except psutil.NoSuchProcess:
        family = [proc.pid]
    for pid in family:
        for kill in (lambda p: os.killpg(p, signal.SIGKILL), lambda p: os.kill(p, signal.SIGKILL)):
            try:
                kill(pid)
            except (ProcessLookupError, PermissionError):
                pass
    proc.wait(timeout=30)


def _runs(uri: str) -> list:
    mlflow.set_tracking_uri(uri)
    return [r for r in mlflow.search_runs(search_all_experiments=True, output_format="list")
            if r.data.tags.get("medsec.stage") == "federated"]


def _artifacts(uri: str, run_id: str) -> set[str]:
    client = mlflow.MlflowClient(uri)
    out = set()
    for item in client.list_artifacts(run_id):
        out |= ({a.path for a in client.list_artifacts(run_id, item.path)} if item.is_dir
                else {item.path})
    return out


@pytest.fixture()
def deployment(tmp_path, phantom_dir):
    """SuperLink + 3 SuperNodes in ``tmp_path`` (their logs in ``logs/``); torn down always."""
    superlink = require_binary(str(BIN / "flower-superlink"))
    supernode = require_binary(str(BIN / "flower-supernode"))
    port = _free_port()
    home = tmp_path / "flwr"
    home.mkdir()
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "local-deployment"\n[superlink.local-deployment]\n'
        f'address = "127.0.0.1:{port}"\ninsecure = true\n')
    logs = tmp_path / "logs"
    logs.mkdir()
    env = dict(os.environ, FLWR_HOME=str(home), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               MEDSEC_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}",
               PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    procs: list[subprocess.Popen] = []

    def start(name: str, *args: str) -> subprocess.Popen:
        log = open(logs / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        procs.append(proc)
        return proc

    try:
        start("superlink", superlink, "--insecure", "--host", "127.0.0.1", "--port", str(port),
              "--disable-runtime-dependency-installation")
        nodes = [start(f"supernode{k}", supernode, "--insecure", "--superlink",
                       f"127.0.0.1:{port}", "--port", str(_free_port()), "--node-config",
                       f"partition-id={k} num-partitions={HOSPITALS}")
                 for k in range(HOSPITALS)]
        _wait_for(lambda: (logs / "superlink.log").read_text().count("Activated node_id")
                  >= HOSPITALS, 180, "3 SuperNodes registered", procs)
        yield {"env": env, "logs": logs, "nodes": nodes, "tmp": tmp_path,
               "uri": env["MEDSEC_TRACKING_URI"], "start": start}
    finally:
        for proc in reversed(procs):
            _kill_tree(proc)


def test_deployment_survives_a_killed_hospital_and_tracks_like_the_simulation(
        deployment, phantom_dir, monkeypatch):
    tmp, logs = deployment["tmp"], deployment["logs"]
    config = tmp / "fed.yaml"
    config.write_text(
        f"dataset: {{name: phantoms, data_dir: {phantom_dir}}}\n"
        "model: {name: small_cnn}\ntrain: {epochs: 1, batch_size: 32, num_threads: 1}\n"
        "federated: {num_clients: 3, rounds: 1, min_fit_clients: 2, "
        "compare_centralized: false}\n")
    run = deployment["start"](
        "flwr-run", str(BIN / "flwr"), "run", str(REPO / "federated_app"), "local-deployment",
        "--stream", "--run-config", f"config='{config}' output-dir='out'")
    victim_log = logs / f"supernode{KILLED}.log"
    _wait_for(lambda: "Receiving: train message" in victim_log.read_text(), TIMEOUT,
              "the hospital to receive its round-1 train message", [run])
    time.sleep(1.0)  # its ClientApp process is starting / training
    assert run.poll() is None
    _kill_tree(deployment["nodes"][KILLED])
    assert "Sending: train message" not in victim_log.read_text()  # killed before replying
    run.wait(timeout=TIMEOUT)
    assert run.returncode == 0, (logs / "flwr-run.log").read_text()[-3000:]

    (deployed,) = _runs(deployment["uri"])
    assert deployed.info.status == "FINISHED"
    assert deployed.data.tags["medsec.federated.runtime"] == "deployment"
    client = mlflow.MlflowClient(deployment["uri"])
    (ok,) = client.get_metric_history(deployed.info.run_id, "clients_ok")
    (failed,) = client.get_metric_history(deployed.info.run_id, "clients_failed")
    assert (ok.step, ok.value, failed.value) == (1, 2.0, 1.0)  # round 1 completed with 2 of 3
    assert (tmp / "out" / "federated.pt").is_file()

    # oracle: the simulated stage, hospital 2 crashing in round 1, logs the same run
    from flows.federated import federated_flow

    sim_dir = tmp / "simulation"
    sim_dir.mkdir()
    monkeypatch.chdir(sim_dir)
    sim_uri = f"sqlite:///{sim_dir / 'mlflow.db'}"
    monkeypatch.setenv("MEDSEC_TRACKING_URI", sim_uri)
    federated_flow(config=str(config), overrides=[f"federated.faults.crash_clients=[{KILLED}]"])
    (simulated,) = _runs(sim_uri)
    def contract(run) -> set[str]:  # the Prefect flow-run tags: only a flow has them
        return {k for k in run.data.tags
                if k.startswith("medsec.") and not k.startswith("medsec.prefect")}

    assert contract(deployed) == contract(simulated)
    for key in ("medsec.dataset", "medsec.data_version", "medsec.model",
                "medsec.federated.strategy", "medsec.privacy"):
        assert deployed.data.tags[key] == simulated.data.tags[key], key
    assert set(deployed.data.metrics) == set(simulated.data.metrics)
    assert {p.split("/")[0] for p in _artifacts(deployment["uri"], deployed.info.run_id)} == \
        {p.split("/")[0] for p in _artifacts(sim_uri, simulated.info.run_id)}
    for key in ("clients_ok", "clients_failed", "test_acc", "test_loss", "initial_test_acc"):
        assert deployed.data.metrics[key] == pytest.approx(simulated.data.metrics[key],
                                                           abs=1e-6), key
