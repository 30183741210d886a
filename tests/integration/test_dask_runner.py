"""The attack sweep on prefect-dask's DaskTaskRunner (real dask.distributed clusters, a real
Prefect server): the same numbers and adversarial images as the in-process runner; a worker
process killed while it runs an attack -> the attack runs again elsewhere and the sweep is
complete; an unreachable scheduler -> one clear ConfigError before any run or file."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import numpy as np
import pytest

import mlflow
from flows.attack import attack_flow
from medsec.attacks.dataset import load_adversarial
from medsec.data.registry import load_dataset
from medsec.errors import ConfigError
from medsec.models.factory import build_classifier
from medsec.training.checkpoint import save_classifier

pytestmark = pytest.mark.integration

# Four attacks (pgd with enough steps that a worker can be killed while it runs one).
ATTACKS = ("attack.attacks=[{name: fgsm, eps: [4/255, 8/255]},"
           " {name: pgd, eps: [8/255], params: {steps: 60, alpha: eps/8}},"
           " {name: bim, eps: [8/255], params: {steps: 40, alpha: eps/8}},"
           " {name: mim, eps: [8/255], params: {steps: 40, alpha: eps/8}}]")
COMMON = ["attack.transfer=null", "attack.image_scaling.enabled=false", "attack.mlflow_sample=0",
          ATTACKS]


@pytest.fixture(scope="module")
def prefect_api():
    """One real Prefect server for the module, exported so Dask workers report to it."""
    from flows.server import prefect_server

    with prefect_server(timeout=400) as url:  # slow to start on a loaded machine
        yield url


@pytest.fixture()
def victim(tmp_path, phantom_dir):
    """A small_cnn checkpoint for the phantoms (seeded initial weights: deterministic)."""
    import torch

    torch.manual_seed(0)
    data = load_dataset("phantoms", phantom_dir)
    meta = {"model_name": "small_cnn", "in_channels": 1, "num_classes": 2,
            "image_size": [32, 32], "norm": "batch", "dropout": 0.0, "dataset": "phantoms",
            "data_version": data.version}
    path = tmp_path / "victim.pt"
    save_classifier(path, build_classifier("small_cnn", 1, 2, (32, 32)), meta)
    return path


def _sweep(out, phantom_dir, victim, *extra: str) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    return attack_flow(preset="tiny", checkpoint=str(victim), out=str(out),
                       overrides=[f"dataset.data_dir={phantom_dir}", *COMMON, *extra])


def _same_outputs(a, b, result_a: dict, result_b: dict) -> None:
    assert result_a["metrics"] == result_b["metrics"]  # exact: same seeds, same arithmetic
    assert set(result_b["status"].values()) == {"ok"}
    names = sorted(p.name for p in (a / "outputs" / "adversarial").glob("*.npz"))
    assert len(names) == 5
    for name in names:
        left = load_adversarial(a / "outputs" / "adversarial" / name)
        right = load_adversarial(b / "outputs" / "adversarial" / name)
        np.testing.assert_array_equal(left.images, right.images)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_dask_sweeps_equal_in_process_and_survive_a_killed_worker(
        tmp_path, monkeypatch, phantom_dir, tracking_uri, prefect_api, victim):
    from dask.distributed import LocalCluster

    monkeypatch.chdir(tmp_path)
    local = _sweep(tmp_path / "local", phantom_dir, victim)
    assert local["metrics"]["attacks_failed"] == 0

    # 1. a LocalCluster of 2 worker processes made by the runner
    dask = _sweep(tmp_path / "dask", phantom_dir, victim, "runner.kind=dask",
                  "runner.n_workers=2")
    _same_outputs(tmp_path / "local", tmp_path / "dask", local, dask)
    # results persisted in the run directory, one per attack; the cluster's scratch too
    assert len(list((tmp_path / "dask" / ".prefect" / "results").iterdir())) >= 4
    assert (tmp_path / "dask" / ".prefect" / "dask").is_dir()

    # 2. an existing cluster by address; one worker process SIGKILLed while it runs an attack
    killed: dict[str, object] = {}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=":0", local_directory=str(tmp_path / "scratch")) as cluster:
        scheduler = cluster.scheduler
        stop = threading.Event()

        def kill_first_busy_worker() -> None:
            while not stop.is_set() and not killed:
                for ws in list(scheduler.workers.values()):
                    busy = [ts.key for ts in ws.processing]  # only attacks run here
                    nanny = next((n for n in cluster.workers.values()
                                  if getattr(n, "worker_address", None) == ws.address), None)
                    if busy and nanny is not None and nanny.process is not None:
                        time.sleep(0.3)  # inside the task, not at its start
                        if ws.address in scheduler.workers and ws.processing:
                            killed.update(key=busy[0], pid=nanny.process.process.pid)
                            os.kill(nanny.process.process.pid, signal.SIGKILL)
                            return
                time.sleep(0.02)

        watcher = threading.Thread(target=kill_first_busy_worker, daemon=True)
        watcher.start()
        try:
            address = _sweep(tmp_path / "address", phantom_dir, victim, "runner.kind=dask",
                             f"runner.address={cluster.scheduler_address}")
        finally:
            stop.set()
            watcher.join(timeout=5)
        assert killed, "no worker was busy with an attack long enough to be killed"
        story = scheduler.story(killed["key"])
        assert sum(1 for event in story if event[2] == "processing") >= 2  # ran again
    _same_outputs(tmp_path / "local", tmp_path / "address", local, address)

    # 3. a rerun in the same directory is served from the persisted results: same numbers
    again = _sweep(tmp_path / "local", phantom_dir, victim)
    assert again["metrics"] == local["metrics"]
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter

    with get_client(sync_client=True) as client:  # only this run had stored results to reuse
        cached = client.read_task_runs(task_run_filter=TaskRunFilter(
            name={"like_": "attack-"}, state={"name": {"any_": ["Cached"]}}))
    # every attack served from the store (a task retried after the killed worker may also
    # have been served from it, so names can repeat)
    assert {r.name for r in cached} == {"attack-bim", "attack-fgsm", "attack-mim", "attack-pgd"}


def test_unreachable_scheduler_fails_before_any_work(tmp_path, monkeypatch, phantom_dir,
                                                     tracking_uri, victim):
    monkeypatch.chdir(tmp_path)
    address = f"tcp://127.0.0.1:{_free_port()}"
    with pytest.raises(ConfigError, match=f"runner.address: no Dask scheduler answers at "
                                          f"{address}"):
        _sweep(tmp_path / "out", phantom_dir, victim, "runner.kind=dask",
               f"runner.address={address}")
    mlflow.set_tracking_uri(tracking_uri)
    assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []
    assert list((tmp_path / "out").iterdir()) == []


def test_failed_attack_is_reported_and_the_sweep_goes_on(tmp_path, monkeypatch, phantom_dir,
                                                         tracking_uri, victim):
    import tasks.attack

    real = tasks.attack.run_spec

    def flaky(spec, *args):  # fault injection: one attack raises, in its own task
        if spec.id == "bim":
            raise ValueError("injected fault: bim ran out of budget\nsecond line")
        return real(spec, *args)

    monkeypatch.setattr(tasks.attack, "run_spec", flaky)
    monkeypatch.chdir(tmp_path)
    out = _sweep(tmp_path / "out", phantom_dir, victim, "runner.retries=1")
    assert out["status"]["bim"] == "failed: ValueError: injected fault: bim ran out of budget"
    assert {k for k, v in out["status"].items() if v == "ok"} == {"fgsm", "pgd", "mim"}
    metrics = out["metrics"]
    assert metrics["attacks_failed"] == 1 and "mim_eps8_robust_acc" in metrics
    assert not any(k.startswith("bim_") for k in metrics)
    mlflow.set_tracking_uri(tracking_uri)
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    parent = next(r for r in runs if r.data.tags.get("medsec.attack") == "suite")
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["medsec.attack.failed"] == "bim"
    (bim,) = [r for r in runs if r.data.tags.get("medsec.attack_id") == "bim"]
    assert bim.info.status == "FAILED"
    assert bim.data.tags["medsec.attack.error"].startswith("ValueError: injected fault")
