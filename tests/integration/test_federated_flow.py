"""The federated flow in-process against a real MLflow store (SQLite) and Prefect."""

from __future__ import annotations

import json

import pytest

import mlflow
from flows.federated import federated_flow
from tests.unit.federated_fixtures import FLOW_OVERRIDES

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
    from tasks.tracking import device_tags  # the simulation's clients: the process hardware

    assert {k: tags.get(k) for k in device_tags()} == device_tags()
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


def test_federated_flow_audits_client_dp_with_canaries(tmp_path, monkeypatch, phantom_dir,
                                                       tracking_uri):
    """``federated.canary`` with client DP: a child run tagged ``medsec.audit=canary`` whose
    lower bound stays below the audited round's epsilon, the same numbers in the parent run,
    ``metrics/federated.json`` and ``reports/federated/canary_audit.json``."""
    monkeypatch.chdir(tmp_path)
    overrides = [f"dataset.data_dir={phantom_dir}", *FLOW_OVERRIDES,
                 "federated.client_dp.enabled=true", "federated.client_dp.noise_multiplier=1.0",
                 "federated.canary.enabled=true", "federated.canary.num_canaries=50"]
    result = federated_flow(overrides=overrides)
    mlflow.set_tracking_uri(tracking_uri)
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    (child,) = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.run_id == result["run_id"] and child.info.status == "FINISHED"
    assert child.data.tags["medsec.audit"] == "canary"
    audit = child.data.metrics
    assert 0.0 <= audit["epsilon_audit_lower"] <= audit["epsilon"] < float("inf")
    assert parent.data.metrics["client_dp_epsilon_audit_lower"] == pytest.approx(
        audit["epsilon_audit_lower"])
    assert parent.data.metrics["client_dp_audit_epsilon"] == pytest.approx(audit["epsilon"])
    on_disk = json.loads((tmp_path / "metrics" / "federated.json").read_text())
    assert on_disk["client_dp_epsilon_audit_lower"] == pytest.approx(audit["epsilon_audit_lower"])
    detail = json.loads((tmp_path / "reports" / "federated" / "canary_audit.json").read_text())
    assert detail["num_canaries"] == 50
