"""The defense flow in-process against a real MLflow store: one run per defense plus the
undefended baseline, the scorecard, the DVC metrics file and loadable defended checkpoints."""

from __future__ import annotations

import json

import pytest
import torch

import mlflow
from flows.defense import defense_flow
from medsec.config import load_config
from medsec.data.registry import load_dataset
from medsec.stages import classifier
from medsec.training.checkpoint import load_classifier, save_classifier

pytestmark = pytest.mark.integration

DEFENSES = ("[{name: fast_fgsm_at, params: {eps: 8/255}}, {name: bit_depth, params: {bits: 3}},"
            " {name: mahalanobis}, {name: smoothing, params: {n0: 4, n: 20, base: baseline}}]")
EVAL = ("{eps: 8/255, steps: 3, restarts: 1, square_queries: 10, max_examples: 24, steps_factor: 2,"
        " predict_samples: 4, eot_samples: 2}")


def test_defense_flow_tracks_every_defense(tmp_path, monkeypatch, phantom_dir, tracking_uri):
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    overrides = [f"dataset.data_dir={phantom_dir}", "train.epochs=2", "train.num_threads=1",
                 f"defense.defenses={DEFENSES}", f"defense.eval={EVAL}"]
    try:
        cfg = load_config(overrides=overrides)  # the train stage's checkpoint, made directly
        data = load_dataset(cfg.dataset.name, cfg.dataset.data_dir)
        trained = classifier.train(cfg, data)
        save_classifier(tmp_path / "models" / "classifier.pt", trained.model, trained.meta)
        result = defense_flow(overrides=overrides)
    finally:
        torch.set_num_threads(threads)

    labels = {"undefended", "fast_fgsm_at", "bit_depth", "mahalanobis", "smoothing"}
    mlflow.set_tracking_uri(tracking_uri)
    runs = {r.data.tags["medsec.defense"]: r
            for r in mlflow.search_runs(search_all_experiments=True, output_format="list")}
    assert set(runs) == labels == set(result["run_ids"])
    for label, run in runs.items():
        assert run.info.status == "FINISHED"
        assert run.data.tags["medsec.stage"] == "defense"
        assert run.data.tags["medsec.dataset"] == "phantoms"
        assert run.data.tags["medsec.model"] == "small_cnn"
        for key in ("clean_acc", "robust_acc", "robust_acc_standard", "robust_acc_adaptive",
                    "train_seconds", "inference_overhead", "gradient_masking_flagged"):
            assert key in run.data.metrics, (label, key)
    assert runs["bit_depth"].data.tags["medsec.defense.flagged"] == "true"
    # the report's Device column: the run that trained a model tags where (the resolved device)
    device = runs["fast_fgsm_at"].data.tags["medsec.device"]  # train.accelerator: auto
    assert device.startswith("gpu (") if torch.cuda.is_available() else device == "cpu"
    assert runs["fast_fgsm_at"].data.tags["medsec.precision"] == "32"
    assert "medsec.device" not in runs["bit_depth"].data.tags  # nothing trained there
    assert "robust_acc_bpda_pgd" in runs["bit_depth"].data.metrics
    assert "robust_acc_gain" in runs["fast_fgsm_at"].data.metrics
    maha = runs["mahalanobis"].data.metrics
    assert {"detection_auroc_pgd", "detection_auroc_detector_aware_pgd",
            "detection_tpr_at_5pct_fpr_fgsm"} <= set(maha)
    smooth = runs["smoothing"].data.metrics
    assert {"certified_acc_at_r0.25", "abstain_rate", "robust_acc_eot_pgd"} <= set(smooth)
    client = mlflow.MlflowClient(tracking_uri)
    base_files = [a.path for a in client.list_artifacts(runs["undefended"].info.run_id,
                                                        "defense")]
    assert "defense/scorecard.md" in base_files

    scorecard = (tmp_path / "reports" / "defense" / "scorecard.md").read_text()
    assert all(label in scorecard for label in labels) and "**bit_depth** FLAGGED" in scorecard
    on_disk = json.loads((tmp_path / "metrics" / "defense.json").read_text())
    assert set(on_disk) == labels
    assert on_disk["bit_depth"]["robust_acc"] == pytest.approx(
        runs["bit_depth"].data.metrics["robust_acc"])
    assert not any("seconds" in k or "overhead" in k for m in on_disk.values() for k in m)
    index = json.loads((tmp_path / "models" / "defended" / "index.json").read_text())
    assert set(index) == {"fast_fgsm_at"}  # smoothing smoothed the baseline: nothing trained
    model, meta = load_classifier(tmp_path / index["fast_fgsm_at"]["path"])
    assert meta["defense"] == "fast_fgsm_at" and meta["model_name"] == "small_cnn"
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 2)
    # the adversarially trained model is in the registry as @robust, serving the same logits
    robust = client.get_model_version_by_alias("medsec-phantoms-small_cnn", "robust")
    assert robust.run_id == runs["fast_fgsm_at"].info.run_id
    x = torch.rand(3, 1, 32, 32)
    served = mlflow.pyfunc.load_model("models:/medsec-phantoms-small_cnn@robust").predict(
        x.numpy())
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(served), model.cpu()(x), atol=1e-5)
