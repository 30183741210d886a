"""The federated flow's recipe audit (``federated.recipe_audit``) against a real MLflow store
(SQLite) and Prefect: one child run per federated recipe, tagged ``medsec.audit=recipe`` and
``medsec.mia_attack``, with the stable membership metric names, sample sizes, under
client DP the claimed ``epsilon`` / ``delta``, and the canary audit's ``epsilon_audit_lower``
beside them (params ``canary_kind`` / ``canary_num_canaries``)."""

from __future__ import annotations

import json

import pytest

import mlflow
from flows.federated import federated_flow
from tests.unit.federated_fixtures import FLOW_OVERRIDES

pytestmark = pytest.mark.integration


def test_federated_flow_logs_a_recipe_audit_per_federated_recipe(tmp_path, monkeypatch,
                                                                phantom_dir, tracking_uri):
    monkeypatch.chdir(tmp_path)
    overrides = [f"dataset.data_dir={phantom_dir}", *FLOW_OVERRIDES,
                 "federated.recipe_audit.enabled=true",
                 "federated.recipe_audit.client_dp_epsilons=[4]",
                 "privacy.audit.pool_size=64", "privacy.audit.num_reference=2",
                 "privacy.audit.attacks=[loss,lira]", "federated.canary.num_canaries=50"]
    result = federated_flow(overrides=overrides)
    mlflow.set_tracking_uri(tracking_uri)
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {r.info.run_name: r for r in runs
                if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert parent.info.run_id == result["run_id"]
    plain = children["federated-phantoms-fedavg-recipe-audit"]
    private = children["federated-phantoms-fedavg-client-dp-eps4-recipe-audit"]
    for child in (plain, private):
        assert child.info.status == "FINISHED"
        assert child.data.tags["medsec.audit"] == "recipe"
        assert child.data.tags["medsec.mia_attack"] == "lira_online"
        m = child.data.metrics
        assert m["mia_n_members"] == 32 and m["mia_n_nonmembers"] == 32
        assert m["mia_n_reference_models"] == 2
        assert m["mia_auc_ci_low"] <= m["mia_auc"] <= m["mia_auc_ci_high"]
        assert "test_acc" in m
    assert private.data.tags["medsec.privacy"] == "client_dp"
    assert 0 < private.data.metrics["epsilon"] <= 4.0 + 1e-6 and private.data.metrics["delta"] > 0
    assert "epsilon" not in plain.data.metrics
    # the one-run canary audit of each recipe: its lower bound beside the claimed epsilon
    for child in (plain, private):
        assert child.data.params["canary_kind"] == "gradient"
        assert child.data.params["canary_num_canaries"] == "50"
        assert child.data.metrics["audit_num_canaries"] == 50
        assert child.data.metrics["epsilon_audit_lower"] >= 0.0
    m = private.data.metrics
    assert m["epsilon_audit_lower"] <= m["canary_epsilon"] <= m["epsilon"] + 1e-9
    on_disk = json.loads((tmp_path / "metrics" / "federated.json").read_text())
    assert on_disk["recipe_audit_fedavg_mia_auc"] == pytest.approx(plain.data.metrics["mia_auc"])
    assert on_disk["recipe_audit_fedavg-client-dp-eps4_epsilon"] == pytest.approx(
        private.data.metrics["epsilon"])
    assert on_disk["recipe_audit_fedavg-client-dp-eps4_epsilon_audit_lower"] == pytest.approx(
        m["epsilon_audit_lower"])
    detail = json.loads((tmp_path / "reports" / "federated" / "recipe_audit_fedavg.json")
                        .read_text())
    assert detail["declared_attack"] == "lira_online"
    assert (tmp_path / "reports" / "federated" / "mia_roc_fedavg.png").is_file()
