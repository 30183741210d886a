"""The privacy sweep (recipe audit) and the checkpoint audit in-process, against a real MLflow
store (SQLite).

Tiny: SYNTHETIC phantoms (train + val pool), a non-private and an epsilon-8 model, each trained
on a random half of the pool, 2 epochs, 4 reference models per target.
"""

from __future__ import annotations

import json

import pytest

import mlflow
from flows.privacy import audit_flow, privacy_flow
from medsec.privacy.accounting import epsilon_reference
from medsec.training.checkpoint import load_classifier

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]

OVERRIDES = [
    "privacy.sweep=[8]", "train.epochs=2", "train.num_threads=1",
    "privacy.audit.num_members=48", "privacy.audit.num_nonmembers=40",
    "privacy.audit.num_population=16", "privacy.audit.num_reference=4",
    "privacy.audit.num_shadow=1", "privacy.audit.extraction.budgets=[16,32]",
    "privacy.audit.extraction.epochs=3", "privacy.audit.inversion.steps=20",
]



def test_privacy_sweep_and_audit(tmp_path, monkeypatch, phantom_dir, tracking_uri):
    monkeypatch.chdir(tmp_path)
    overrides = [f"dataset.data_dir={phantom_dir}", *OVERRIDES]
    result = privacy_flow(preset="tiny", overrides=overrides)

    mlflow.set_tracking_uri(tracking_uri)
    runs = {r.data.tags["medsec.privacy"]: r
            for r in mlflow.search_runs(search_all_experiments=True, output_format="list")}
    assert set(runs) == {"none", "dp-eps8", "sweep"}
    for run in runs.values():
        tags = run.data.tags
        assert run.info.status == "FINISHED" and tags["medsec.stage"] == "privacy"
        assert tags["medsec.dataset"] == "phantoms" and tags["medsec.model"] == "small_cnn"
    dp, base = runs["dp-eps8"], runs["none"]
    for child in (dp, base):  # one child run per model under the sweep's summary run
        assert child.data.tags["mlflow.parentRunId"] == result["summary_run_id"]
    assert dp.data.params["model.norm"] == base.data.params["model.norm"] == "group"
    for key in ("test_acc", "test_auc", "mia_auc", "mia_auc_ci_low", "mia_auc_ci_high",
                "mia_n_members", "mia_n_nonmembers", "mia_n_reference_models",
                "mia_loss_auc", "mia_lira_online_auc", "mia_lira_offline_auc",
                "mia_rmia_auc", "extraction_probs_agreement", "extraction_labels_test_acc",
                "inversion_ssim_own"):
        assert key in dp.data.metrics and key in base.data.metrics, key
    for child in (dp, base):  # the declared attack is the headline, never a max over attacks
        assert child.data.tags["medsec.audit"] == "recipe"
        assert child.data.tags["medsec.mia_attack"] == "lira_online"
        cm = child.data.metrics
        assert cm["mia_auc"] == cm["mia_lira_online_auc"]
        assert cm["mia_auc_ci_low"] <= cm["mia_auc"] <= cm["mia_auc_ci_high"]
        assert cm["mia_n_reference_models"] == 4
        # members and non-members: the two halves of one pool; too few to resolve 0.1 % FPR
        assert abs(cm["mia_n_members"] - cm["mia_n_nonmembers"]) <= 1
        assert "mia_tpr_at_0.1pct_fpr" not in cm  # null (with a reason), never a number
    assert "epsilon" not in base.data.metrics

    # The DP run's epsilon: within the target, recomputed independently (dp_accounting PLD;
    # the run used Opacus' PRV accountant), logged per epoch, and stored with the model.
    m = dp.data.metrics
    assert dp.data.params["dp_accountant"] == "prv" and dp.data.params["dp_normalisation"] == (
        "fixed")
    assert dp.data.tags["medsec.dp_noise"] == "seeded" and "medsec.dp_noise" not in (
        base.data.tags)
    reference = epsilon_reference(m["dp_noise_multiplier"], m["dp_sample_rate"],
                                  int(m["dp_steps"]), m["dp_delta"], method="pld")
    assert m["epsilon"] == pytest.approx(reference, rel=0.02)
    assert 7.0 < m["epsilon"] <= 8.0
    assert m["dp_delta"] == pytest.approx(1 / (10 * m["mia_n_members"]))  # N = the members
    client = mlflow.MlflowClient(tracking_uri)
    history = client.get_metric_history(dp.info.run_id, "epsilon")
    per_epoch = {h.step: h.value for h in history}
    assert sorted(per_epoch) == [0, 1] and per_epoch[0] < per_epoch[1] == m["epsilon"]
    ckpt = client.download_artifacts(dp.info.run_id, "model/classifier.pt", str(tmp_path))
    _, meta = load_classifier(ckpt)
    assert meta["privacy"]["epsilon"] == pytest.approx(m["epsilon"])
    assert meta["privacy"]["accountant"] == "prv" and meta["norm"] == "group"
    artifacts = {a.path for a in client.list_artifacts(dp.info.run_id, "privacy")}
    assert {"privacy/mia_roc.png", "privacy/dp.json", "privacy/audit.json"} <= artifacts

    # The same table on disk (DVC metrics + report) and in the summary run.
    table = json.loads((tmp_path / "metrics" / "privacy.json").read_text())
    assert set(table) == {"none", "dp-eps8"} and table["none"]["epsilon"] is None
    assert table["dp-eps8"]["epsilon"] == pytest.approx(m["epsilon"])
    assert table["dp-eps8"]["mia_auc"] == pytest.approx(m["mia_auc"])
    report = (tmp_path / "reports" / "privacy" / "privacy_utility.md").read_text()
    assert "dp-eps8" in report and "TPR@0.1%FPR" in report
    summary = {a.path for a in client.list_artifacts(result["summary_run_id"], "privacy")}
    assert {"privacy/privacy_utility.md", "privacy/privacy_utility.png"} <= summary

    local = client.download_artifacts(dp.info.run_id, "privacy/audit.json", str(tmp_path))
    audit_json = json.loads(open(local).read())
    assert audit_json["metrics"]["mia_tpr_at_0.1pct_fpr"] is None
    assert "non-members" in audit_json["null_reasons"]["mia_tpr_at_0.1pct_fpr"]
    assert sum(map(len, audit_json["members"].values())) == m["mia_n_members"]

    # A checkpoint audit of the DP model with the members recorded in its card: the same pool
    # and target give the recipe audit's loss-attack AUC again.
    audited = audit_flow(preset="tiny", checkpoint=ckpt, overrides=[
        *overrides, "privacy.audit.attacks=[loss]", "privacy.audit.declared_attack=loss"])
    assert audited["privacy"] == "dp-eps8" and audited["audit"] == "checkpoint"
    assert audited["nonmembers"].startswith("pool")
    assert audited["metrics"]["mia_auc"] == pytest.approx(m["mia_loss_auc"])
    assert audited["metrics"]["mia_n_members"] == m["mia_n_members"]
    assert "non-members" in audited["resolution"][0]
    run = mlflow.get_run(audited["run_id"])
    assert run.data.tags["medsec.audit"] == "checkpoint"
    assert run.data.tags["medsec.mia_attack"] == "loss"
    assert run.data.tags["medsec.privacy.checkpoint"] == ckpt
