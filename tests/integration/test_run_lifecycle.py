"""Run isolation and lifecycle of ``medsec run`` as a user meets them (real subprocesses, real
MLflow SQLite store, real Prefect, real DVC; the tiny preset)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.helpers import BIN, copy_repo, env_with, run

pytestmark = pytest.mark.integration
MEDSEC = str(BIN / "medsec")
TEST_KEYS = ("test_acc", "test_auc", "test_f1", "test_loss")


def _env(tmp_path: Path, store: str = "mlflow") -> dict[str, str]:
    return env_with(MEDSEC_TRACKING_URI=f"sqlite:///{tmp_path / store / 'mlflow.db'}",
                    PREFECT_HOME=str(tmp_path / "prefect"), OMP_NUM_THREADS="1")


def _runs(env: dict[str, str]):
    import mlflow

    mlflow.set_tracking_uri(env["MEDSEC_TRACKING_URI"])
    return mlflow.search_runs(search_all_experiments=True, output_format="list")


def _test_metrics(env: dict[str, str]) -> dict[str, dict[str, float]]:
    """seed -> test metrics of the evaluate runs in the store."""
    return {r.data.params["seed"]: {k: v for k, v in r.data.metrics.items() if k in TEST_KEYS}
            for r in _runs(env) if r.data.tags["medsec.stage"] == "evaluate"}


def _start(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([MEDSEC, *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_concurrent_pipelines_match_each_run_alone(tmp_path):
    pipeline = ["run", "--preset", "tiny"]
    alone = _env(tmp_path, "alone")
    for seed in ("1", "2"):
        out = run([MEDSEC, *pipeline, "--set", f"seed={seed}"], tmp_path, alone)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    both = _env(tmp_path, "both")
    procs = [_start([*pipeline, "--set", f"seed={seed}"], tmp_path, both) for seed in "12"]
    for proc in procs:
        assert proc.wait(timeout=900) == 0, proc.stdout.read()[-3000:]
    expected = _test_metrics(alone)
    assert set(expected) == {"1", "2"} and expected["1"] != expected["2"]
    assert _test_metrics(both) == expected
    runs = _runs(both)
    assert {r.info.status for r in runs} == {"FINISHED"}
    parents = {r.info.run_id for r in runs if r.data.tags["medsec.stage"] == "pipeline"}
    assert len(parents) == 2
    for r in runs:  # one run per stage, each a child of its own pipeline run
        if r.data.tags["medsec.stage"] in ("data", "validate", "train", "evaluate"):
            assert r.data.tags["mlflow.parentRunId"] in parents
    train = {r.info.run_id for r in runs if r.data.tags["medsec.stage"] == "train"}
    evaluated = {r.data.tags["medsec.source_run_id"] for r in runs
                 if r.data.tags["medsec.stage"] == "evaluate"}
    assert evaluated == train
    # every run wrote under its own runs/<id>/, never the DVC outputs
    assert len(list((tmp_path / "runs").iterdir())) == 4
    for dvc_out in ("models", "metrics", "outputs", "plots", "reports", "prepared"):
        assert not (tmp_path / dvc_out).exists(), dvc_out


def _servers(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid), "-f", "create_app"], capture_output=True,
                         text=True)
    return [int(p) for p in out.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"


def _wait_for_training(env: dict[str, str], pids: set[int], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        training = {int(r.data.tags["medsec.pid"]) for r in _runs(env)
                    if r.data.tags.get("medsec.stage") == "train" and r.info.status == "RUNNING"}
        if pids <= training:
            return
        time.sleep(1)
    raise AssertionError("the runs never reached training")


def test_killed_runs_end_and_leave_no_server(tmp_path):
    env = _env(tmp_path)
    # many epochs: still training when the signals arrive
    args = ["run", "--preset", "tiny", "--set", "train.epochs=200"]
    hard, soft = _start(args, tmp_path, env), _start(args, tmp_path, env)
    _wait_for_training(env, {hard.pid, soft.pid})
    servers = _servers(hard.pid) + _servers(soft.pid)
    assert len(servers) == 2
    hard.kill()  # SIGKILL: nothing of the process runs any more
    soft.send_signal(signal.SIGTERM)
    assert hard.wait(timeout=60) == -signal.SIGKILL
    assert soft.wait(timeout=120) == 128 + signal.SIGTERM, soft.stdout.read()[-3000:]
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in servers) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not any(_alive(p) for p in servers), "a temporary Prefect server outlived its parent"
    by_pid = {r.info.run_id: (int(r.data.tags["medsec.pid"]), r.info.status) for r in _runs(env)}
    assert {s for pid, s in by_pid.values() if pid == soft.pid} == {"KILLED", "FINISHED"}
    assert "RUNNING" in {s for pid, s in by_pid.values() if pid == hard.pid}
    # the next run sweeps the dead process's runs
    out = run([MEDSEC, "stage", "data", "--preset", "tiny"], tmp_path, env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    runs = _runs(env)
    assert "RUNNING" not in {r.info.status for r in runs}
    swept = [r for r in runs if int(r.data.tags["medsec.pid"]) == hard.pid
             and r.data.tags["medsec.stage"] in ("pipeline", "train")]
    assert {r.info.status for r in swept} == {"FAILED"}
    assert all("ended without closing" in r.data.tags["medsec.end_reason"] for r in swept)


def test_dvc_exp_run_temp_logs_to_the_checkout_store(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    env = env_with(PREFECT_HOME=str(tmp_path / "prefect"), OMP_NUM_THREADS="1")
    env.pop("MEDSEC_TRACKING_URI", None)
    dvc = str(BIN / "dvc")
    assert run([MEDSEC, "data", "init"], repo, env).returncode == 0
    assert run([dvc, "add", "-q", "data"], repo, env).returncode == 0
    out = run([dvc, "exp", "run", "--temp", "-S", "phantoms.n_train=24", "data"], repo, env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    store = repo / "mlflow" / "mlflow.db"
    assert store.is_file()
    runs = _runs({"MEDSEC_TRACKING_URI": f"sqlite:///{store}"})
    assert [r.data.tags["medsec.stage"] for r in runs] == ["data"]
    assert runs[0].data.params["phantoms.n_train"] == "24"
    assert runs[0].info.status == "FINISHED"


@pytest.mark.parametrize("args, named", [
    (["run", "--preset", "tiny", "--set", "train.lr=-1"], "train.lr"),
    (["stage", "validate", "--preset", "tiny", "--set", "dataset.name=breastmnist",
      "--set", "dataset.data_dir=."], "breastmnist.npz"),  # raised inside the flow
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, named):
    env = _env(tmp_path)
    out = run([MEDSEC, *args], tmp_path, env)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], out.stderr
    assert "Traceback" not in out.stdout
    if (tmp_path / "mlflow" / "mlflow.db").exists():
        assert "FINISHED" not in {r.info.status for r in _runs(env)}
    debug = run([MEDSEC, "--debug", *args], tmp_path, env)
    assert debug.returncode == 2 and "Traceback" in debug.stderr
