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
        "segmentation.adversarial_training={eps: 8/255, steps: 1}",
    ])
    mlflow.set_tracking_uri(tracking_uri)
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    by_stage: dict[str, list] = {}
    for r in runs:
        assert r.info.status == "FINISHED"
        assert r.data.tags["medsec.task"] == "segmentation"
        assert r.data.tags["medsec.model"] == "unet"
        if r.data.tags["medsec.defense"] == "none":
            by_stage.setdefault(r.data.tags["medsec.stage"], []).append(r)
    assert len(by_stage["train"]) == 1 and len(by_stage["attack"]) == 3
    train = by_stage["train"][0]
    # the adversarially trained segmenter: its own train run and the same three attacks
    defended = [r for r in runs if r.data.tags["medsec.defense"] == "pgd_at"]
    assert sorted(r.data.tags["medsec.stage"] for r in defended) == ["attack"] * 3 + ["train"]
    d_train = next(r for r in defended if r.data.tags["medsec.stage"] == "train")
    assert d_train.info.run_id == result["defended_run_id"] != result["run_id"]
    assert d_train.data.metrics["at_eps"] == pytest.approx(8 / 255)
    from tasks.tracking import device_tags  # both trained segmenters: where they trained

    for r in (train, d_train):
        assert {k: r.data.tags.get(k) for k in device_tags()} == device_tags()
    d_metrics = result["metrics"]["defended"]["pgd_at"]
    assert set(d_metrics["attacks"]) == {"seg_pgd", "seg_erase", "seg_inject"}
    # the undefended model's adversarial images, scored on PGD-AT (black-box transfer)
    assert set(d_metrics["transfer"]) == {"seg_pgd", "seg_erase", "seg_inject"}
    assert d_metrics["transfer"]["seg_erase"]["linf_max"] == pytest.approx(
        result["metrics"]["attacks"]["seg_erase"]["linf_max"])
    assert "transfer_seg_erase_target_dice" in d_train.data.metrics
    assert (tmp_path / "outputs" / "segmentation" / "pgd_at" / "segmenter.pt").is_file()
    assert (tmp_path / "outputs" / "segmentation" / "pgd_at" / "seg_erase.npz").is_file()
    # one scorecard with both segmenters, on disk and in the first train run
    card = (tmp_path / "outputs" / "segmentation" / "scorecard.md").read_text()
    assert "## undefended" in card and "## pgd_at" in card and "(transfer)" in card
    assert "| seg_erase | PGD-2 L-inf 48/255, erase, lesion+1px |" in card
    client_files = {a.path for a in mlflow.MlflowClient(tracking_uri).list_artifacts(
        result["run_id"], "segmentation")}
    assert "segmentation/scorecard.md" in client_files
    assert "segmentation/dice_curve.png" in client_files
    curve = (tmp_path / "plots" / "segmentation_curve.csv").read_text().splitlines()
    assert curve[0] == "attack,eps,dice,norm"
    assert {line.split(",")[0] for line in curve[1:]} == {
        "undefended PGD", "undefended noise", "pgd_at PGD", "pgd_at noise"}
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


def _png_folder(root, bad: bool) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        for sub in ("images", "masks"):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        for i in range(4):
            mask = np.zeros((16, 16), np.uint8)
            if i % 2:
                mask[4:8, 4:8] = 2 if bad and (split, i) == ("train", 1) else 1
            Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(
                root / split / "images" / f"case{i}.png")
            Image.fromarray(mask).save(root / split / "masks" / f"case{i}.png")


def test_segmentation_flow_on_a_folder_validates_first(tmp_path, monkeypatch, tracking_uri):
    """A user folder goes through the Great Expectations checks before training: a mask value
    outside the declared classes stops the flow with the image named, writes no model or
    metrics, and leaves a FAILED MLflow run with the report."""
    from medsec.errors import ValidationFailed

    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    _png_folder(tmp_path / "bad", bad=True)
    overrides = ["segmentation.data=folder", "segmentation.num_classes=2", "segmentation.epochs=1",
                 "segmentation.attacks=[{name: seg_pgd, steps: 1}]", "segmentation.n_attack=2"]
    with pytest.raises(ValidationFailed, match=r"mask values .*train\[1\] \(case1\)"):
        segmentation_flow(overrides=[*overrides, f"segmentation.folder={tmp_path / 'bad'}"])
    assert not (tmp_path / "models" / "segmenter.pt").exists()
    assert not (tmp_path / "metrics" / "segmentation.json").exists()
    report = json.loads((tmp_path / "outputs" / "segmentation" / "validation" /
                         "report.json").read_text())
    assert report["success"] is False and report["dataset_name"] == "bad"
    assert "case1" not in json.dumps(report)  # file names are not logged
    mlflow.set_tracking_uri(tracking_uri)
    (failed,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert failed.info.status == "FAILED" and failed.data.metrics["data_success"] == 0.0
    # the good folder trains and is attacked
    _png_folder(tmp_path / "good", bad=False)
    result = segmentation_flow(overrides=[*overrides, f"segmentation.folder={tmp_path / 'good'}"])
    assert result["metrics"]["clean"]["test_dice"] >= 0.0
    assert set(result["attack_run_ids"]) == {"seg_pgd"}
