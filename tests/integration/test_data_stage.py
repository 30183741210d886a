"""The data stage: prepared/ from the params (phantoms) or the raw file (MedMNIST), and the
later stages' loader that prepares it when missing or made for other params."""

from __future__ import annotations

import json

import numpy as np
import pytest

import mlflow
from flows.data import data_flow
from medsec.config import load_config
from medsec.data.phantoms import write_phantoms
from medsec.io import file_digest, save_npz_deterministic
from tasks.common import load_dataset_task

pytestmark = pytest.mark.integration
SMALL = ["phantoms.n_train=20", "phantoms.n_val=8", "phantoms.n_test=8", "phantoms.size=16"]


def test_data_flow_generates_phantoms_from_params(tmp_path, monkeypatch, tracking_uri):
    monkeypatch.chdir(tmp_path)
    info = data_flow(overrides=[f"dataset.data_dir={tmp_path / 'raw'}", *SMALL])
    prepared = tmp_path / "prepared"
    reference = write_phantoms(tmp_path / "ref.npz", 20, 8, 8, 16, 0)
    # the same bytes as the generator gives: the same data version
    assert info["version"] == file_digest(prepared / "phantoms.npz") == file_digest(reference)
    assert info["counts"] == {"train": 20, "val": 8, "test": 8}
    assert json.loads((prepared / "dataset.json").read_text()) == info
    mlflow.set_tracking_uri(tracking_uri)
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert [r.data.tags["medsec.stage"] for r in runs] == ["data"]
    assert runs[0].data.tags["medsec.data_version"] == info["version"]


def test_loader_prepares_when_missing_or_stale(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(overrides=[f"dataset.data_dir={tmp_path / 'raw'}", *SMALL])
    data = load_dataset_task.fn(cfg)  # no prepared/ yet: prepared now
    assert len(data.splits["train"]) == 20 and (tmp_path / "prepared" / "dataset.json").is_file()
    again = load_dataset_task.fn(cfg)
    assert again.version == data.version
    bigger = cfg.model_copy(update={"phantoms": cfg.phantoms.model_copy(update={"n_train": 30})})
    assert len(load_dataset_task.fn(bigger).splits["train"]) == 30  # other params: re-prepared
    # a phantom file in the raw folder is a fixed set: used instead of the params
    write_phantoms(tmp_path / "raw" / "phantoms.npz", 12, 6, 6, 16, 1)
    fixed = load_dataset_task.fn(cfg)
    assert len(fixed.splits["train"]) == 12
    assert fixed.extra["source"] == "phantoms.npz"  # relative to the data root, never absolute


def test_medmnist_file_is_checked_and_copied(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.RandomState(0)
    arrays = {}
    for split, n in (("train", 10), ("val", 4), ("test", 4)):
        arrays[f"{split}_images"] = rng.randint(0, 256, (n, 28, 28)).astype(np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(-1, 1).astype(np.uint8)
    raw = save_npz_deterministic(tmp_path / "raw" / "breastmnist.npz", arrays)
    monkeypatch.setenv("MEDSEC_DATA_DIR", str(tmp_path / "raw"))
    cfg = load_config(overrides=["dataset.name=breastmnist"])
    data = load_dataset_task.fn(cfg)
    assert data.version == file_digest(raw) == file_digest(tmp_path / "prepared/breastmnist.npz")
    assert data.verification.startswith("unverified")
    raw.unlink()  # later stages read prepared/, not the raw folder
    assert load_dataset_task.fn(cfg).version == data.version
