"""The attack flow on a generated multi-label manifest (three findings per chest-X-ray-like
image, BCE-trained victim) against a real MLflow SQLite store: exact-match robust accuracy,
the per-example worst case, macro AUC under attack, multi-hot adversarial datasets; a
class-only attack in the suite is skipped with a record (tag, status, scorecard row), a suite
of only class-only attacks is refused in one line before any run."""

from __future__ import annotations

import json

import numpy as np
import pytest

import mlflow
from flows.attack import attack_flow
from flows.train import train_flow
from medsec.attacks.dataset import load_adversarial
from medsec.errors import ConfigError
from tests.unit.test_multilabel import multilabel_manifest

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]


def _overrides(root) -> list[str]:
    return ["dataset.source=manifest", "dataset.name=own", "dataset.path=manifest.csv",
            f"dataset.data_dir={root}", "dataset.image_size=16", "model.name=small_cnn",
            "train.epochs=4", "train.batch_size=16", "train.lr=0.003",
            "attack.image_scaling={n_examples: 4, source_size: 32, steps: 20}"]


def test_attack_flow_on_multilabel_manifest(tmp_path, monkeypatch, tracking_uri):
    raw = tmp_path / "raw"
    multilabel_manifest(raw, n_patients=30, per_patient=2, size=16)
    monkeypatch.chdir(tmp_path)
    overrides = _overrides(raw)
    trained = train_flow(preset="tiny", overrides=overrides)

    refused = [*overrides, "attack.attacks=[{name: deepfool, eps: [4/255]}]"]
    with pytest.raises(ConfigError, match=r"^attack.attacks\[0\] deepfool: not applicable to "
                                          r"multi-label data \(deepfool needs one class"):
        attack_flow(preset="tiny", overrides=refused)  # nothing left to run: refused
    mlflow.set_tracking_uri(tracking_uri)
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert not [r for r in runs if r.data.tags["medsec.stage"] == "attack"]  # nothing started
    assert not (tmp_path / "metrics" / "attack.json").exists()

    # fgsm + pgd at 4/255 and 8/255, and a deepfool that is skipped with a record
    suite = ("attack.attacks=[{name: fgsm, eps: [4/255, 8/255]}, {name: pgd, eps: [4/255, "
             "8/255], params: {steps: 5, alpha: eps/2}}, {name: deepfool, eps: [4/255]}]")
    out = attack_flow(preset="tiny", overrides=[*overrides, suite])
    line = ("attack.attacks[2] deepfool: not applicable to multi-label data (deepfool needs "
            "one class per image)")
    assert out["status"]["deepfool"] == "not applicable"
    assert out["not_applicable"] == [{
        "field": "attack.attacks[2]", "entry": "deepfool", "status": "not applicable",
        "reason": "not applicable to multi-label data: deepfool needs one class per image"}]
    card = json.loads((tmp_path / "reports" / "scorecards" / "attack.json").read_text())
    assert card["not_applicable"]["deepfool"]["status"] == "not applicable"
    assert not [k for k in card if k.startswith("deepfool")]  # never a number
    runs = [r for r in mlflow.search_runs(search_all_experiments=True, output_format="list")
            if r.data.tags["medsec.stage"] == "attack"]
    parent = next(r for r in runs if r.data.tags["medsec.attack"] == "suite")
    assert parent.info.run_id == out["run_id"]
    assert parent.data.tags["medsec.skipped"] == line
    assert not [k for k in parent.data.metrics if k.startswith("deepfool")]
    assert {r.info.status for r in runs} == {"FINISHED"} and len(runs) == 3
    assert parent.data.tags["medsec.source_run_id"] == trained["run_id"]
    m = parent.data.metrics
    for key in ("clean_acc", "pgd_eps8_robust_acc", "fgsm_eps4_attack_success_rate",
                "worst_case_eps8_robust_acc", "worst_case_eps4_robust_acc",
                "pgd_eps8_macro_auc", "image_scaling_success_rate"):
        assert key in m, key
    assert m["worst_case_eps8_robust_acc"] <= min(m["pgd_eps8_robust_acc"],
                                                  m["fgsm_eps8_robust_acc"]) <= m["clean_acc"]

    # the logged numbers follow from the written adversarial datasets (exact match)
    pgd = load_adversarial(tmp_path / "outputs" / "adversarial" / "pgd_eps8.npz")
    fgsm = load_adversarial(tmp_path / "outputs" / "adversarial" / "fgsm_eps8.npz")
    assert pgd.labels.shape == (m["n_examples"], 3) and pgd.meta["data"]["task"] == "multilabel"
    import torch

    from medsec.training.checkpoint import load_classifier

    model, _ = load_classifier(tmp_path / "models" / "classifier.pt")
    model.eval()
    y = pgd.labels
    index = json.loads((tmp_path / "outputs" / "adversarial" / "index.json").read_text())
    assert index["datasets"][0]["name"] == "fgsm_eps4"
    with torch.no_grad():
        pred = {k: (model(torch.from_numpy(d.images)).numpy() >= 0).astype(np.float32)
                for k, d in (("pgd", pgd), ("fgsm", fgsm))}
    pgd_ok, fgsm_ok = ((pred[k] == y).all(1) for k in ("pgd", "fgsm"))
    assert m["pgd_eps8_robust_acc"] <= float(pgd_ok.mean()) + 1e-9
    assert m["worst_case_eps8_robust_acc"] <= float((pgd_ok & fgsm_ok).mean()) + 1e-9
