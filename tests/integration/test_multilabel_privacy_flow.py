"""The privacy sweep (recipe audit, DP-SGD point, canary audit, side attacks) and the DeepFake
flow on a generated multi-label manifest (3 findings, several per image, 60 patients), in
process against a real MLflow store (SQLite)."""

from __future__ import annotations

import pytest

import mlflow
from flows.privacy import privacy_flow
from medsec.privacy.accounting import epsilon_reference
from tests.unit.test_multilabel import multilabel_manifest

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]


def _own(root) -> list[str]:
    return ["dataset.source=manifest", "dataset.name=own", "dataset.path=manifest.csv",
            f"dataset.data_dir={root}", "dataset.image_size=16", "train.num_threads=1"]


PRIVACY = [
    "privacy.sweep=[8]", "train.epochs=2", "privacy.audit.num_reference=2",
    "privacy.audit.num_shadow=1", "privacy.audit.extraction.budgets=[8,16]",
    "privacy.audit.extraction.epochs=2", "privacy.audit.inversion.steps=5",
    "privacy.canary.enabled=true", "privacy.canary.epochs=1",
]


def test_privacy_sweep_on_multilabel_manifest(tmp_path, monkeypatch, tracking_uri):
    raw = tmp_path / "raw"
    multilabel_manifest(raw, n_patients=60)
    monkeypatch.chdir(tmp_path)
    result = privacy_flow(preset="tiny", overrides=[*_own(raw), *PRIVACY])
    assert result["status"] == {"none": "ok", "dp-eps8": "ok"}

    mlflow.set_tracking_uri(tracking_uri)
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert {r.info.status for r in runs} == {"FINISHED"}
    points = {r.data.tags["medsec.privacy"]: r for r in runs
              if r.data.tags.get("medsec.audit") == "recipe"}
    assert set(points) == {"none", "dp-eps8"}
    for run in points.values():
        m, tags = run.data.metrics, run.data.tags
        assert tags["medsec.data_source"] == "manifest"
        # multi-label evaluation: macro AUC and one AUC per finding
        assert {"test_auc", "test_auc_label_0", "test_auc_label_2"} <= set(m)
        for attack in ("loss", "lira_online", "lira_offline", "rmia"):
            assert 0.0 <= m[f"mia_{attack}_auc"] <= 1.0
        assert m["mia_auc"] == m["mia_lira_online_auc"]
        assert m["mia_auc_ci_low"] <= m["mia_auc"] <= m["mia_auc_ci_high"]
        assert m["mia_n_members"] > 0 and m["mia_n_nonmembers"] > 0
        assert "mia_patient_auc" in m and m["mia_n_reference_models"] == 2
        assert 0.0 <= m["extraction_probs_agreement"] <= 1.0
        # inversion has no meaning with several findings per image: a tag, no number
        assert tags["medsec.inversion"].startswith("skipped: multi-label")
        assert not any(k.startswith("inversion_") for k in m)
    dp = points["dp-eps8"].data.metrics
    reference = epsilon_reference(dp["dp_noise_multiplier"], dp["dp_sample_rate"],
                                  int(dp["dp_steps"]), dp["dp_delta"], method="pld")
    assert dp["epsilon"] == pytest.approx(reference, rel=0.02) and dp["epsilon"] <= 8.0 + 1e-6
    canaries = [r for r in runs if r.data.tags.get("medsec.audit") == "canary"]
    assert len(canaries) == 2
    for run in canaries:
        assert run.data.metrics["epsilon_audit_lower"] >= 0.0


DEEPFAKE = [
    "train.epochs=2", "deepfake.max_eval=16", "deepfake.gan.epochs=1",
    "deepfake.unseen_gan.epochs=1", "deepfake.dataset.n_per_class=8",
    "deepfake.tamper.epochs=1", "deepfake.tamper.n_images=8", "deepfake.detector.epochs=1",
    "deepfake.detector.n_train=32", "deepfake.dp.epochs=1", "deepfake.dp.batch_size=32",
    "deepfake.dp.epsilons=[8.0]", "deepfake.canary.enabled=false",
]


def test_deepfake_flow_on_multilabel_manifest(tmp_path, monkeypatch, tracking_uri):
    from flows.deepfake import deepfake_flow
    from flows.train import train_flow

    raw = tmp_path / "raw"
    multilabel_manifest(raw, n_patients=60)
    monkeypatch.chdir(tmp_path)
    overrides = [*_own(raw), *DEEPFAKE]
    train_flow(preset="tiny", overrides=overrides)  # the multi-label victim (BCE)
    result = deepfake_flow(preset="tiny", overrides=overrides)
    mlflow.set_tracking_uri(tracking_uri)
    run = mlflow.get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["medsec.deepfake.labels"] == "any-finding"
    m = run.data.metrics
    for key in ("real_test_acc", "tstr_acc", "detector_auc_seen", "tamper_flip_rate",
                "gen_mia_auc", "dp_eps8_tstr_acc"):
        assert key in m and 0.0 <= m[key] <= 1.0, key
