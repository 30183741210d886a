"""The DeepFake flow in-process against a real MLflow store (SQLite), on tiny settings.

SYNTHETIC phantoms (96 training images, 32x32); the victim comes from the train flow (tiny
preset); every generator, inpainter and detector trains for one epoch.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import mlflow
from flows.deepfake import DEEPFAKE_DIR, deepfake_flow
from flows.train import train_flow
from medsec.deepfakes.networks import load_generator
from medsec.errors import DataError
from medsec.io import file_digest

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]

OVERRIDES = [
    "train.num_threads=1", "deepfake.max_eval=48", "deepfake.gan.epochs=1",
    "deepfake.unseen_gan.epochs=1", "deepfake.dataset.n_per_class=16",
    "deepfake.tamper.epochs=1", "deepfake.tamper.n_images=16", "deepfake.detector.epochs=1",
    "deepfake.detector.n_train=48", "deepfake.dp.epochs=1", "deepfake.dp.batch_size=32",
    "deepfake.dp.epsilons=[8.0]",
]



def test_deepfake_flow_tracks_everything(tmp_path, monkeypatch, phantom_dir, tracking_uri):
    monkeypatch.chdir(tmp_path)
    overrides = [f"dataset.data_dir={phantom_dir}", *OVERRIDES]
    train_flow(preset="tiny", overrides=overrides)
    result = deepfake_flow(preset="tiny", overrides=overrides)

    mlflow.set_tracking_uri(tracking_uri)
    staged = [r for r in mlflow.search_runs(search_all_experiments=True, output_format="list")
              if r.data.tags["medsec.stage"] == "deepfake"]
    runs = [r for r in staged if "mlflow.parentRunId" not in r.data.tags]
    assert len(runs) == 1 and runs[0].info.run_id == result["run_id"]
    run = runs[0]
    # the tiny preset's one-run DP audit of the DP-GAN: a child run tagged medsec.audit=canary
    (canary,) = [r for r in staged if r.data.tags.get("mlflow.parentRunId") == run.info.run_id]
    assert canary.data.tags["medsec.audit"] == "canary"
    assert 0.0 <= canary.data.metrics["epsilon_audit_lower"] <= canary.data.metrics["epsilon"]
    assert run.data.metrics["dp_eps8_epsilon_audit_lower"] == pytest.approx(
        canary.data.metrics["epsilon_audit_lower"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["medsec.attack"] == "deepfake_tamper"
    assert run.data.tags["medsec.privacy"] == "dp_gan_eps_8"
    metrics = run.data.metrics
    for key in ("real_test_acc", "tstr_acc", "fd_classifier", "fd_real_baseline",
                "precision_knn", "recall_knn", "copy_fraction", "gen_mia_auc",
                "detector_auc_seen", "detector_auc_unseen", "tamper_flip_rate",
                "tamper_detector_auc", "dp_eps8_tstr_acc", "dp_eps8_gen_mia_auc", "gan_d_loss"):
        assert key in metrics, key
    assert 0 < metrics["dp_eps8_epsilon"] <= 8.0 + 1e-6
    assert metrics["tamper_max_change_outside"] == 0.0 and metrics["tamper_ssim_outside"] == 1.0
    on_disk = json.loads((tmp_path / "metrics" / "deepfake.json").read_text())
    assert on_disk["tstr_acc"] == pytest.approx(metrics["tstr_acc"])
    assert "seconds_generate" in metrics and not any(k.startswith("seconds") for k in on_disk)

    client = mlflow.MlflowClient(tracking_uri)
    files = {a.path for a in client.list_artifacts(run.info.run_id, "deepfake")}
    assert {"deepfake/samples.png", "deepfake/tampering.png", "deepfake/fakes_sample.npz",
            "deepfake/metadata.json", "deepfake/dp_utility.png",
            "deepfake/samples_dp_eps8.png"} <= files
    assert [a.path for a in client.list_artifacts(run.info.run_id, "model")] == \
        ["model/generator.pt"]

    # The versioned DeepFake dataset and its metadata.
    out = tmp_path / DEEPFAKE_DIR
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["checkpoint_sha256"] == file_digest(out / "generator.pt", "sha256")
    assert meta["dataset"] == "phantoms" and meta["n_images"]["train"] == 32
    with np.load(out / "fakes.npz") as fakes:
        assert fakes["train_images"].shape == (32, 32, 32)
    generator, _ = load_generator(out / "generator.pt", dataset="phantoms",
                                  image_shape=(1, 32, 32))
    with pytest.raises(DataError, match="not 'pneumoniamnist'"):
        load_generator(out / "generator.pt", dataset="pneumoniamnist")

    # A victim trained on other data is refused before any run starts.
    other = tmp_path / "other"
    from medsec.data.phantoms import write_phantoms

    write_phantoms(other / "phantoms.npz", 96, 48, 48, 32, 1)
    with pytest.raises(DataError, match="run the train stage first"):
        deepfake_flow(preset="tiny", overrides=[f"dataset.data_dir={other}", *OVERRIDES])
    # still the train run, the deepfake run and its canary child
    assert len(mlflow.search_runs(search_all_experiments=True, output_format="list")) == 3
