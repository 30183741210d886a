"""The benchmark flow in-process against a real MLflow store (SQLite) and Prefect."""

from __future__ import annotations

import json

import numpy as np
import pytest

import mlflow
from flows.benchmark import benchmark_flow
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
    runs = {r.data.tags["medsec.stage"]: r for r in _runs(tracking_uri)}
    assert set(runs) == {"validate", "train", "attack"}
    train = runs["train"]
    assert train.info.status == "FINISHED" and train.info.run_id == result["run_id"]
    tags = train.data.tags
    assert tags["medsec.dataset"] == "phantoms" and tags["medsec.model"] == "small_cnn"
    assert len(tags["medsec.data_version"]) == 32 and tags["medsec.git_commit"]
    for key in ("test_acc", "test_auc", "test_f1", "test_recall_class_0", "val_acc", "best_epoch"):
        assert key in train.data.metrics, key
    assert train.data.params["train.epochs"] == "1"
    client = mlflow.MlflowClient(tracking_uri)
    artifacts = {a.path for a in client.list_artifacts(train.info.run_id)}
    assert {"model", "evaluation", "curves"} <= artifacts
    model_files = [a.path for a in client.list_artifacts(train.info.run_id, "model")]
    assert model_files == ["model/classifier.pt"]
    # the same numbers land in DVC metrics files
    on_disk = json.loads((tmp_path / "metrics" / "evaluate.json").read_text())
    assert on_disk["test_acc"] == pytest.approx(train.data.metrics["test_acc"])
    assert (tmp_path / "reports" / "validation" / "report.md").is_file()
    assert runs["validate"].data.tags["medsec.verification"].startswith("synthetic")


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
