"""Tracking store location and the orphan-run sweep (a real MLflow SQLite store)."""

from __future__ import annotations

import os
import socket
import subprocess

from tasks.tracking import TRACKING_ENV, repo_root, resolve_tracking_uri, sweep_orphan_runs


def test_store_resolves_from_the_checkout_root(tmp_path, monkeypatch):
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config").write_text("")
    temp_copy = tmp_path / ".dvc" / "tmp" / "exps" / "tmpabc"  # where dvc exp run --temp runs
    (temp_copy / ".dvc").mkdir(parents=True)
    (temp_copy / ".dvc" / "config").write_text("")
    monkeypatch.chdir(temp_copy)
    monkeypatch.delenv(TRACKING_ENV, raising=False)
    assert repo_root() == tmp_path.resolve()
    assert resolve_tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'mlflow' / 'mlflow.db'}"
    monkeypatch.setenv(TRACKING_ENV, "sqlite:///elsewhere/m.db")  # the environment still wins
    assert resolve_tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'elsewhere' / 'm.db'}"
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    assert repo_root(outside) == outside.resolve()


def test_sweep_fails_only_runs_of_dead_processes_of_this_host(tmp_path):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'm.db'}")
    client = mlflow.MlflowClient()
    experiment = client.create_experiment("sweep", artifact_location=tmp_path.as_uri())
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = socket.gethostname()
    tags = {"dead": (str(dead.pid), host), "alive": (str(os.getpid()), host),
            "other-host": (str(dead.pid), f"not-{host}")}
    ids = {name: client.create_run(experiment, tags={"medsec.pid": pid, "medsec.host": h}
                                   ).info.run_id for name, (pid, h) in tags.items()}
    assert sweep_orphan_runs(experiment) == [ids["dead"]]
    status = {name: client.get_run(i).info.status for name, i in ids.items()}
    assert status == {"dead": "FAILED", "alive": "RUNNING", "other-host": "RUNNING"}
    assert "ended without closing" in client.get_run(ids["dead"]).data.tags["medsec.end_reason"]
