"""`medsec server up` (PostgreSQL + MLflow, proxied artifacts): two pipelines at once lose
nothing; an unreachable server stops `medsec run` before any work."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from tests.integration.helpers import BIN, copy_repo, env_with, free_port, require_binary, run

pytestmark = pytest.mark.integration
PGBIN = Path("/usr/lib/postgresql/15/bin")
EPOCHS = 2


@pytest.fixture(scope="module")
def tracking_server():
    """`medsec server up` in a temp state dir (outside pytest's 0700 temp root, so user
    postgres can enter it); `medsec server down` afterwards, checked by `status`."""
    require_binary(str(PGBIN / "initdb"))
    state = Path(tempfile.mkdtemp(prefix="medsec-server-", dir="/tmp"))
    state.chmod(0o755)
    env = env_with(MEDSEC_PGBIN=str(PGBIN))
    medsec = str(BIN / "medsec")
    out = run([medsec, "server", "up", "--state-dir", str(state)], Path.cwd(), env, timeout=300)
    try:
        assert out.returncode == 0, out.stdout + out.stderr + _log(state)
        uri = re.search(r"export MEDSEC_TRACKING_URI=(\S+)", out.stdout).group(1)
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", uri)
        status = run([medsec, "server", "status", "--state-dir", str(state)], Path.cwd(), env)
        assert status.returncode == 0 and "postgres: up; mlflow: up" in status.stdout
        yield uri
    finally:
        down = run([medsec, "server", "down", "--state-dir", str(state)], Path.cwd(), env)
        status = run([medsec, "server", "status", "--state-dir", str(state)], Path.cwd(), env)
        shutil.rmtree(state, ignore_errors=True)
    assert down.returncode == 0, down.stdout + down.stderr
    assert status.returncode == 1 and "postgres: down; mlflow: down" in status.stdout


def _log(state: Path) -> str:
    path = state / "mlflow.log"
    return path.read_text()[-3000:] if path.is_file() else ""


def _artifacts(client, run_id: str, path: str | None = None) -> list[str]:
    files = []
    for item in client.list_artifacts(run_id, path):
        files += _artifacts(client, run_id, item.path) if item.is_dir else [item.path]
    return sorted(files)


def _md5(path: str | Path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def test_two_pipelines_at_once_lose_nothing(tmp_path, tracking_server):
    import mlflow
    from mlflow import MlflowClient

    repo = copy_repo(tmp_path / "repo")
    env = env_with(MEDSEC_TRACKING_URI=tracking_server, OMP_NUM_THREADS="1")
    medsec = str(BIN / "medsec")
    assert run([medsec, "data", "init"], repo, env).returncode == 0
    cmd = [medsec, "run", "--preset", "tiny", "--set", f"train.epochs={EPOCHS}"]
    procs = [subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=1200)[0] for p in procs]
    for proc, output in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, output[-4000:]
    run_dirs = [repo / re.search(r"done: (\S+);", o).group(1) for o in outputs]

    mlflow.set_tracking_uri(tracking_server)
    client = MlflowClient()
    experiment = client.get_experiment_by_name("medsec")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # proxied
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    by_id = {r.info.run_id: r for r in runs}

    def root(run):
        parent = run.data.tags.get("mlflow.parentRunId")
        return root(by_id[parent]) if parent else run

    pipelines = [r for r in runs if r.data.tags["medsec.stage"] == "pipeline"]
    assert len(pipelines) == 2
    trees: dict[str, list] = defaultdict(list)
    for r in runs:
        assert r.info.status == "FINISHED", r.info.run_name
        trees[root(r).info.run_id].append(r)
    assert set(trees) == {p.info.run_id for p in pipelines}

    def summary(tree):  # what one pipeline wrote, independent of ids and timestamps
        def key(r):
            stage, keys = r.data.tags["medsec.stage"], sorted(r.data.metrics)
            return (stage, "pipeline" if stage == "pipeline" else r.info.run_name, tuple(keys),
                    len(r.data.params), tuple(_artifacts(client, r.info.run_id)),
                    tuple(len(client.get_metric_history(r.info.run_id, k)) for k in keys))
        return Counter(key(r) for r in tree)

    first, second = (summary(trees[p.info.run_id]) for p in pipelines)
    assert first == second  # same runs, metric histories, params and artifacts in both
    assert len(runs) == 2 * sum(first.values())
    stages = Counter(r.data.tags["medsec.stage"] for r in runs)
    for stage in ("pipeline", "data", "validate", "train", "evaluate"):
        assert stages[stage] == 2, stages
    assert stages["attack"] >= 2

    trains = [r for r in runs if r.data.tags["medsec.stage"] == "train"]
    assert sorted(int(r.data.tags["medsec.registered_version"]) for r in trains) == [1, 2]
    for train in trains:
        history = client.get_metric_history(train.info.run_id, "train_loss")  # MLFlowLogger
        assert sorted(m.step for m in history) == list(range(EPOCHS))
        assert len(client.get_metric_history(train.info.run_id, "val_auc")) == EPOCHS
        # the checkpoint downloaded through the proxy is the one the pipeline wrote
        pipeline_dir = Path(root(train).data.tags["medsec.run_dir"])
        local = client.download_artifacts(train.info.run_id, "model/classifier.pt", str(tmp_path))
        assert _md5(local) == _md5(repo / pipeline_dir / "models" / "classifier.pt")
        Path(local).unlink()
    assert {d.resolve() for d in run_dirs} == {
        (repo / root(t).data.tags["medsec.run_dir"]).resolve() for t in trains}
    champion = client.get_model_version_by_alias("medsec-phantoms-small_cnn", "champion")
    assert champion.run_id in {t.info.run_id for t in trains}


def test_unreachable_server_fails_before_work(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    env = env_with(MEDSEC_TRACKING_URI=f"http://127.0.0.1:{free_port()}")
    out = run([str(BIN / "medsec"), "run", "--preset", "tiny"], repo, env, timeout=300)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.count("\n") == 1 and "is unreachable" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert not (repo / "runs").exists() and not (repo / "prepared").exists()  # no work done
