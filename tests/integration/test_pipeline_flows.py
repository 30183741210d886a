"""The benchmark flow in-process against a real MLflow store (SQLite) and Prefect."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import mlflow
from flows.benchmark import benchmark_flow
from flows.evaluate import evaluate_flow
from flows.train import train_flow
from flows.validate import validate_flow
from medsec.errors import ConfigError, DataError, ValidationFailed

pytestmark = pytest.mark.integration


def _runs(uri: str):
    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(search_all_experiments=True, output_format="list")


def test_benchmark_flow_tracks_everything(tmp_path, monkeypatch, phantom_dir, tracking_uri):
    monkeypatch.chdir(tmp_path)
    result = benchmark_flow(preset="tiny", overrides=[f"dataset.data_dir={phantom_dir}"])
    assert 0.0 <= result["test"]["test_acc"] <= 1.0
    all_runs = _runs(tracking_uri)
    runs = {r.data.tags["medsec.stage"]: r for r in all_runs
            if r.data.tags.get("mlflow.parentRunId") in (None, result["pipeline_run_id"])}
    assert set(runs) == {"pipeline", "data", "validate", "train", "evaluate", "attack"}
    assert {r.info.status for r in all_runs} == {"FINISHED"}
    assert runs["pipeline"].info.run_id == result["pipeline_run_id"]
    train, evaluate = runs["train"], runs["evaluate"]
    assert train.info.run_id == result["run_id"]
    assert evaluate.data.tags["medsec.source_run_id"] == train.info.run_id
    tags = train.data.tags
    assert tags["medsec.dataset"] == "phantoms" and tags["medsec.model"] == "small_cnn"
    assert len(tags["medsec.data_version"]) == 32 and tags["medsec.git_commit"]
    assert tags["medsec.pid"].isdigit() and tags["medsec.host"]
    for key in ("val_acc", "best_epoch"):
        assert key in train.data.metrics, key
    for key in ("test_acc", "test_auc", "test_f1", "test_recall_class_0"):
        assert key in evaluate.data.metrics, key
    assert train.data.params["train.epochs"] == "1"
    client = mlflow.MlflowClient(tracking_uri)
    artifacts = {a.path for a in client.list_artifacts(train.info.run_id)}
    assert {"model", "curves"} <= artifacts
    assert {a.path for a in client.list_artifacts(evaluate.info.run_id)} == {"evaluation"}
    model_files = [a.path for a in client.list_artifacts(train.info.run_id, "model")]
    # the checkpoint beside the MLflow model (log_model: MLmodel, weights, signature, example)
    assert {"model/classifier.pt", "model/MLmodel"} <= set(model_files), model_files
    # every output lands in the run's own directory, none in the DVC layout
    run_dir = Path(result["run_dir"])
    assert run_dir.parent == Path("runs")
    on_disk = json.loads((run_dir / "metrics" / "evaluate.json").read_text())
    assert on_disk["test_acc"] == pytest.approx(evaluate.data.metrics["test_acc"])
    assert (run_dir / "reports" / "validation" / "report.md").is_file()
    assert (run_dir / "models" / "classifier.pt").is_file()
    assert (run_dir / "prepared").is_dir()
    for dvc_out in ("models", "metrics", "outputs", "plots", "reports", "prepared"):
        assert not (tmp_path / dvc_out).exists(), dvc_out
    assert runs["validate"].data.tags["medsec.verification"].startswith("synthetic")


def test_evaluate_failure_leaves_the_training_run_finished(tmp_path, monkeypatch, phantom_dir,
                                                           tracking_uri):
    monkeypatch.chdir(tmp_path)
    overrides = [f"dataset.data_dir={phantom_dir}"]
    trained = train_flow(preset="tiny", overrides=overrides, out="a")

    def broken(*args, **kwargs):
        raise DataError("broken test split")

    monkeypatch.setattr("flows.evaluate.split", broken)  # fails inside the evaluate run
    with pytest.raises(DataError, match="broken"):
        evaluate_flow(preset="tiny", overrides=overrides, checkpoint=trained["checkpoint"],
                      info=trained["info"], out="b")
    status = {r.data.tags["medsec.stage"]: r.info.status for r in _runs(tracking_uri)}
    assert status == {"train": "FINISHED", "evaluate": "FAILED"}
    assert Path(trained["checkpoint"]) == Path("a/models/classifier.pt")


def test_nan_pixels_stop_before_any_run(tmp_path, monkeypatch, tracking_uri):
    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = rng.random((8, 28, 28)).astype(np.float32)
        arrays[f"{split}_labels"] = (np.arange(8) % 2).reshape(-1, 1)
    arrays["train_images"][1, 3, 3] = np.nan
    np.savez(tmp_path / "breastmnist.npz", **arrays)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="NaN"):
        validate_flow(overrides=["dataset.name=breastmnist", f"dataset.data_dir={tmp_path}"])
    assert _runs(tracking_uri) == []
    assert not (tmp_path / "metrics").exists() and not (tmp_path / "reports").exists()


def test_failed_hard_expectation_marks_run_failed(tmp_path, monkeypatch, tracking_uri):
    # 3 labels in a dataset registered as binary: the loader rejects it before any run.
    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = rng.integers(0, 255, (8, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(8) % 3).reshape(-1, 1)
    np.savez(tmp_path / "breastmnist.npz", **arrays)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="labels must be in"):
        validate_flow(overrides=["dataset.name=breastmnist", f"dataset.data_dir={tmp_path}"])
    assert _runs(tracking_uri) == []


def test_fail_on_warnings_fails_the_run(tmp_path, monkeypatch, tracking_uri):
    # All-one-class splits: a soft (class balance) warning, made fatal by the config.
    arrays = {}
    rng = np.random.default_rng(1)
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = rng.integers(0, 255, (8, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = np.zeros((8, 1), np.uint8)
    np.savez(tmp_path / "breastmnist.npz", **arrays)
    monkeypatch.chdir(tmp_path)
    overrides = ["dataset.name=breastmnist", f"dataset.data_dir={tmp_path}"]
    validate_flow(overrides=overrides)  # warnings only: passes
    with pytest.raises(ValidationFailed, match="warnings"):
        validate_flow(overrides=[*overrides, "validation.fail_on_warnings=true"])
    statuses = sorted(r.info.status for r in _runs(tracking_uri))
    assert statuses == ["FAILED", "FINISHED"]


def test_bad_config_fails_before_tracking(tmp_path, monkeypatch, tracking_uri):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="train.lr"):
        validate_flow(overrides=["train.lr=-1"])
    assert _runs(tracking_uri) == []
