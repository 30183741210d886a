"""Own images through the pipeline: a generated PNG class folder (2 classes, 6 patients each,
3 images per patient) -> data -> validate -> train -> evaluate -> attack at 64 px, and
data -> train -> evaluate at 224 px, with the MLflow tags of the tracking contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import mlflow
from flows.benchmark import benchmark_flow
from flows.data import data_flow
from flows.evaluate import evaluate_flow
from flows.train import train_flow
from tests.unit.own_data_fixtures import make_folder_dataset

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]


def _own(root: Path, size: int) -> list[str]:
    return ["dataset.source=folder", "dataset.name=cxr", "dataset.path=cxr",
            f"dataset.data_dir={root}", f"dataset.image_size={size}"]


def test_folder_dataset_runs_every_core_stage_at_64px(tmp_path, monkeypatch, tracking_uri):
    raw = tmp_path / "raw"
    make_folder_dataset(raw / "cxr", n_patients=6, per_patient=3, size=48)
    monkeypatch.chdir(tmp_path)
    result = benchmark_flow(preset="tiny", overrides=_own(raw, 64))
    assert 0.0 <= result["test"]["test_acc"] <= 1.0
    mlflow.set_tracking_uri(tracking_uri)
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    stages = {r.data.tags["medsec.stage"]: r for r in runs}
    assert {"data", "validate", "train", "evaluate", "attack"} <= set(stages)
    assert {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:  # the contract: every run says where its data came from, and its size
        assert run.data.tags["medsec.data_source"] == "folder", run.data.tags["medsec.stage"]
        assert run.data.params["dataset.image_size"] == "64"
        # the data root was given as an absolute path: it is not logged, nor is any path in it
        assert run.data.params["dataset.data_dir"] == "<absolute path, not logged>"
        assert not any(str(raw) in v for v in [*run.data.params.values(),
                                               *run.data.tags.values()])
    run_dir = Path(result["run_dir"])
    info = json.loads((run_dir / "prepared" / "dataset.json").read_text())
    assert info["image_size"] == 64 and info["source"] == "cxr"
    assert sum(info["counts"].values()) == 36
    # patient keys are pseudonyms: no raw folder name reaches prepared/
    with np.load(run_dir / "prepared" / "cxr.npz") as meta:
        keys = np.concatenate([meta[f"{s}_patient"] for s in ("train", "val", "test")])
    assert len(set(keys)) == 12 and all(k.startswith("P") and "patient" not in k for k in keys)
    blob = b"".join(p.read_bytes() for p in (run_dir / "prepared").iterdir())
    assert b"patient0" not in blob and str(tmp_path).encode() not in blob
    report = json.loads((run_dir / "reports" / "validation" / "report.json").read_text())
    assert report["success"] and report["leakage"]["patients_across"] == 0
    card = json.loads((run_dir / "models" / "classifier.json").read_text())["meta"]
    assert card["image_size"] == [64, 64] and card["class_names"] == ["lesion", "normal"]


def test_224px_data_train_evaluate(tmp_path, monkeypatch, tracking_uri):
    raw = tmp_path / "raw"
    make_folder_dataset(raw / "cxr", n_patients=4, per_patient=2, size=64, seed=3)
    monkeypatch.chdir(tmp_path)
    overrides = [*_own(raw, 224), "dataset.max_train=16", "dataset.max_eval=8"]
    info = data_flow(preset="tiny", overrides=overrides)
    assert info["image_size"] == 224 and info["data_source"] == "folder"
    trained = train_flow(preset="tiny", overrides=overrides)
    evaluated = evaluate_flow(preset="tiny", overrides=overrides,
                              checkpoint=trained["checkpoint"], info=trained["info"])
    assert 0.0 <= evaluated["test_acc"] <= 1.0
    assert trained["meta"]["image_size"] == [224, 224] and trained["meta"]["in_channels"] == 1
    mlflow.set_tracking_uri(tracking_uri)
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert {r.data.params["dataset.image_size"] for r in runs} == {"224"}


def test_bad_own_data_exits_2_with_one_line_naming_the_file(tmp_path):
    from tests.integration.helpers import BIN, env_with, run
    from tests.unit.own_data_fixtures import make_manifest, manifest_dataset

    rows = manifest_dataset(tmp_path / "raw", n_patients=2, per_patient=1, size=16)
    make_manifest(tmp_path / "raw", [*rows, {"path": "img/gone.png", "label": "normal"}])
    (tmp_path / "params.yaml").write_text(
        "dataset:\n  source: manifest\n  name: own\n  path: manifest.csv\n  data_dir: raw\n")
    env = env_with(MEDSEC_TRACKING_URI=f"sqlite:///{tmp_path}/m.db")
    out = run([str(BIN / "medsec"), "stage", "data"], tmp_path, env)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "manifest.csv row 6: img/gone.png: file not found under the data root" in out.stderr
    assert str(tmp_path) not in out.stderr and "Traceback" not in out.stderr
