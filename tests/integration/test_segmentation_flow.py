"""The segmentation flow in-process against a real MLflow store (SQLite) and Prefect."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import mlflow
from flows.segmentation import segmentation_flow

pytestmark = pytest.mark.integration

ATTACKS = ("[{name: seg_pgd, steps: 2}, {name: seg_erase, kind: erase, eps: 48/255, steps: 2, "
           "region_margin: 1}, {name: seg_inject, kind: inject, eps: 32/255, steps: 2}]")


def test_segmentation_flow_tracks_everything(tmp_path, monkeypatch, phantom_dir, tracking_uri):
    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    result = segmentation_flow(overrides=[
        f"dataset.data_dir={phantom_dir}", "segmentation.epochs=1", "segmentation.n_attack=4",
        "segmentation.max_train=32", f"segmentation.attacks={ATTACKS}",
    ])
    mlflow.set_tracking_uri(tracking_uri)
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    by_stage: dict[str, list] = {}
    for r in runs:
        assert r.info.status == "FINISHED"
        assert r.data.tags["medsec.task"] == "segmentation"
        assert r.data.tags["medsec.model"] == "unet"
        by_stage.setdefault(r.data.tags["medsec.stage"], []).append(r)
    assert len(by_stage["train"]) == 1 and len(by_stage["attack"]) == 3
    train = by_stage["train"][0]
    assert train.info.run_id == result["run_id"]
    for key in ("test_dice", "test_dice_lesion", "test_iou_lesion", "test_hd95_lesion",
                "val_dice"):
        assert key in train.data.metrics, key
    attacks = {r.data.tags["medsec.attack"]: r for r in by_stage["attack"]}
    assert set(attacks) == {"seg_pgd", "seg_erase", "seg_inject"}
    assert "target_dice" in attacks["seg_erase"].data.metrics
    assert "forged_fraction" in attacks["seg_inject"].data.metrics
    client = mlflow.MlflowClient(tracking_uri)
    files = {a.path for a in client.list_artifacts(attacks["seg_erase"].info.run_id,
                                                   "segmentation")}
    assert {"segmentation/seg_erase_overlay.png", "segmentation/seg_erase.npz",
            "segmentation/seg_erase.json"} <= files
    # DVC files: metrics and the adversarial dataset
    on_disk = json.loads((tmp_path / "metrics" / "segmentation.json").read_text())
    assert on_disk["clean"]["test_dice"] == pytest.approx(train.data.metrics["test_dice"])
    with np.load(tmp_path / "outputs" / "segmentation" / "seg_erase.npz") as npz:
        adv, masks = npz["test_images"], npz["test_masks"]
        assert adv.shape[1:] == (1, 32, 32) and masks.shape == (adv.shape[0], 32, 32)
        assert adv.min() >= 0 and adv.max() <= 1
    meta = json.loads((tmp_path / "outputs" / "segmentation" / "seg_erase.json").read_text())
    assert meta["source"]["mlflow_run_id"] == result["run_id"]
    assert meta["metrics"]["linf_max"] <= 48 / 255 + 1e-6
    assert (tmp_path / "models" / "segmenter.pt").is_file()
