"""A real Prefect server + worker runs the benchmark deployment; the run lands in MLflow."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request

import pytest

import mlflow
from tests.integration.helpers import BIN, copy_repo, env_with, free_port, run

pytestmark = pytest.mark.integration

STATE_SCRIPT = """
import asyncio, sys
from prefect.client.orchestration import get_client
async def main():
    async with get_client() as client:
        run = await client.read_flow_run(sys.argv[1])
        print(run.state.type.value)
asyncio.run(main())
"""

ARTIFACTS_SCRIPT = """
import asyncio, json, sys
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
async def main():
    async with get_client() as client:
        found = await client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=sys.argv[1:])))
        print(json.dumps([{"flow_run_id": str(a.flow_run_id), "key": a.key, "type": a.type,
                           "data": a.data} for a in found]))
asyncio.run(main())
"""


@pytest.fixture()
def prefect_server(tmp_path):
    port = free_port()
    home = tmp_path / "prefect-home"
    env = env_with(PREFECT_HOME=str(home), PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
                   PREFECT_SERVER_ANALYTICS_ENABLED="false")
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2):
                break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError((tmp_path / "server.log").read_text()) from None
            time.sleep(1)
    else:
        proc.kill()
        raise RuntimeError("Prefect server did not become healthy in 180 s")
    yield env
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def test_deployment_run_reaches_mlflow(tmp_path, prefect_server):
    repo = copy_repo(tmp_path / "repo")
    uri = f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    # prefect.yaml's pull step uses {{ $PWD }}: the directory `prefect deploy` is run from
    env = dict(prefect_server, MEDSEC_TRACKING_URI=uri, PWD=str(repo))
    prefect = str(BIN / "prefect")
    assert run([str(BIN / "medsec"), "data", "init"], repo, env).returncode == 0
    out = run([prefect, "work-pool", "create", "medsec-local", "--type", "process"], repo, env)
    assert out.returncode == 0, out.stdout + out.stderr
    out = run([prefect, "--no-prompt", "deploy", "--all"], repo, env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    out = run([prefect, "deployment", "run", "benchmark/tiny"], repo, env)
    assert out.returncode == 0, out.stdout + out.stderr
    match = re.search(r"UUID:\s*([0-9a-f-]{36})", out.stdout)
    assert match, out.stdout
    flow_run_id = match.group(1)
    out = run([prefect, "worker", "start", "--pool", "medsec-local", "--run-once"], repo, env,
              timeout=900)
    state = run([str(BIN / "python"), "-c", STATE_SCRIPT, flow_run_id], repo, env)
    assert state.stdout.strip() == "COMPLETED", out.stdout[-4000:] + out.stderr[-4000:]

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    train = [r for r in runs if r.data.tags["medsec.stage"] == "train"]
    assert len(train) == 1 and train[0].info.status == "FINISHED"
    assert train[0].data.tags["medsec.preset"] == "tiny"
    evaluate = [r for r in runs if r.data.tags["medsec.stage"] == "evaluate"]
    assert "test_auc" in evaluate[0].data.metrics
    assert evaluate[0].data.tags["medsec.source_run_id"] == train[0].info.run_id
    assert len(list((repo / "runs").glob("*/models/classifier.pt"))) == 1  # its own run dir
    assert not (repo / "models" / "classifier.pt").exists()  # DVC outputs untouched

    # Two-way linkage. MLflow -> Prefect: every run names its flow run and the deployment's.
    for r in runs:
        assert r.data.tags["medsec.prefect_root_flow_run_id"] == flow_run_id
    pipeline = [r for r in runs if r.data.tags["medsec.stage"] == "pipeline"]
    assert pipeline[0].data.tags["medsec.prefect_flow_run_id"] == flow_run_id
    flow_runs = {r.data.tags["medsec.prefect_flow_run_id"] for r in runs}
    # Prefect -> MLflow: each flow run carries a table artifact naming its MLflow runs.
    out = run([str(BIN / "python"), "-c", ARTIFACTS_SCRIPT, *flow_runs], repo, env)
    assert out.returncode == 0, out.stderr[-3000:]
    linked: dict[str, str] = {}
    for artifact in json.loads(out.stdout):
        assert artifact["type"] == "table" and artifact["key"].startswith("mlflow-")
        table = artifact["data"]
        table = json.loads(table) if isinstance(table, str) else table
        linked |= {row["mlflow_run_id"]: artifact["flow_run_id"] for row in table}
    assert linked == {r.info.run_id: r.data.tags["medsec.prefect_flow_run_id"] for r in runs}
