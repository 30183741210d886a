"""The federated flow in-process against a real MLflow store (SQLite) and Prefect."""

from __future__ import annotations

import json

import pytest

import mlflow
from flows.federated import federated_flow

pytestmark = pytest.mark.integration


def test_federated_flow_tracks_rounds_baseline_and_model(tmp_path, monkeypatch, phantom_dir,
                                                         tracking_uri):
    monkeypatch.chdir(tmp_path)
    overrides = [f"dataset.data_dir={phantom_dir}", "federated.num_clients=3",
                 "federated.rounds=2", "train.batch_size=32"]
    result = federated_flow(overrides=overrides)
    mlflow.set_tracking_uri(tracking_uri)
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert run.info.status == "FINISHED" and run.info.run_id == result["run_id"]
    tags = run.data.tags
    assert tags["medsec.stage"] == "federated" and tags["medsec.federated.strategy"] == "fedavg"
    assert len(tags["medsec.data_version"]) == 32
    metrics = run.data.metrics
    for key in ("test_acc", "centralized_test_acc", "acc_gap_vs_centralized",
                "upload_bytes_per_client", "round_seconds", "label_skew"):
        assert key in metrics, key
    assert run.data.params["federated.num_clients"] == "3"
    client = mlflow.MlflowClient(tracking_uri)
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "test_acc")]
    assert sorted(steps) == [1, 2]
    assert [a.path for a in client.list_artifacts(run.info.run_id, "model")] == [
        "model/federated.pt"]
    on_disk = json.loads((tmp_path / "metrics" / "federated.json").read_text())
    assert on_disk["test_acc"] == pytest.approx(metrics["test_acc"])
    full = json.loads((tmp_path / "reports" / "scorecards" / "federated.json").read_text())
    assert full["centralized_epochs"] == 2 and "centralized_epochs" not in on_disk
    assert (tmp_path / "models" / "federated.pt").is_file()
