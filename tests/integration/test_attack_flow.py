"""The attack flow in-process against a real MLflow store (SQLite) and Prefect: parent and
child runs per the tracking contract, DVC metrics/plots, adversarial datasets; bad models
stop before anything is written."""

from __future__ import annotations

import json

import pytest

import mlflow
from flows.attack import attack_flow
from flows.train import train_flow
from medsec.attacks.dataset import load_adversarial
from medsec.data.registry import load_dataset
from medsec.errors import DataError
from medsec.models.factory import build_classifier
from medsec.training.checkpoint import save_classifier
from tests.unit.attack_fixtures import ProbabilityModel, single_thread  # noqa: F401

pytestmark = pytest.mark.integration


def _runs(uri: str):
    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(search_all_experiments=True, output_format="list")


def test_attack_flow_tracks_everything(tmp_path, monkeypatch, phantom_dir, tracking_uri):
    monkeypatch.chdir(tmp_path)
    overrides = [f"dataset.data_dir={phantom_dir}"]
    trained = train_flow(preset="tiny", overrides=overrides)
    out = attack_flow(preset="tiny", overrides=overrides)  # fgsm + pgd at 4/255 and 8/255

    runs = [r for r in _runs(tracking_uri) if r.data.tags["medsec.stage"] == "attack"]
    parent = next(r for r in runs if r.data.tags["medsec.attack"] == "suite")
    children = {r.data.tags["medsec.attack"]: r for r in runs if r is not parent}
    assert parent.info.run_id == out["run_id"] and parent.info.status == "FINISHED"
    assert set(children) == {"fgsm", "pgd"}
    tags = parent.data.tags
    assert tags["medsec.source_run_id"] == trained["run_id"]
    assert tags["medsec.dataset"] == "phantoms" and len(tags["medsec.data_version"]) == 32
    for key in (
        "clean_acc",
        "pgd_eps8_robust_acc",
        "fgsm_eps4_attack_success_rate",
        "worst_case_eps8_robust_acc",
        "pgd_eps8_seconds_per_image",
        "image_scaling_success_rate",
    ):
        assert key in parent.data.metrics, key

    client = mlflow.MlflowClient(tracking_uri)
    for name, child in children.items():
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.params["spec.name"] == name
        history = client.get_metric_history(child.info.run_id, "robust_acc")
        assert sorted(m.step for m in history) == [4, 8]  # step = epsilon in grey levels
        assert child.data.metrics["eps8_robust_acc"] == pytest.approx(
            parent.data.metrics[f"{name}_eps8_robust_acc"]
        )
        files = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"examples.png", "adversarial_sample"} <= files
        samples = {a.path for a in client.list_artifacts(child.info.run_id, "adversarial_sample")}
        assert f"adversarial_sample/{name}_eps8_sample.npz" in samples
    figures = {a.path for a in client.list_artifacts(parent.info.run_id, "robustness")}
    assert {
        "robustness/robustness_curve.png",
        "robustness/examples.png",
        "robustness/image_scaling.png",
        "robustness/attack.json",
    } <= figures

    on_disk = json.loads((tmp_path / "metrics" / "attack.json").read_text())
    full = json.loads((tmp_path / "reports" / "scorecards" / "attack.json").read_text())
    assert full["pgd_eps8_robust_acc"] == pytest.approx(  # headline keys only in metrics/
        parent.data.metrics["pgd_eps8_robust_acc"]
    )
    assert "pgd_eps8_robust_acc" not in on_disk and "worst_case_eps8_robust_acc" in on_disk
    assert not any("seconds" in key for key in full)  # timings only in MLflow
    curve = (tmp_path / "plots" / "robustness_curve.csv").read_text().splitlines()
    assert curve[0] == "attack,eps,robust_acc,norm" and len(curve) == 1 + 3 * 3
    assert (tmp_path / "plots" / "robustness_curve.png").is_file()
    adv = load_adversarial(tmp_path / "outputs" / "adversarial" / "pgd_eps8.npz")
    assert len(adv) == 32 and adv.images.shape[1:] == (1, 32, 32)
    assert adv.meta["source_model"]["mlflow_run_id"] == trained["run_id"]
    assert adv.meta["data"]["version"] == tags["medsec.data_version"]


def _fake_checkpoint(path, phantom_dir, data_version: str | None = None) -> None:
    data = load_dataset("phantoms", phantom_dir)
    meta = {
        "model_name": "small_cnn",
        "in_channels": 1,
        "num_classes": 2,
        "image_size": [32, 32],
        "norm": "batch",
        "dropout": 0.0,
        "dataset": "phantoms",
        "data_version": data_version or data.version,
    }
    save_classifier(path, build_classifier("small_cnn", 1, 2, (32, 32)), meta)


@pytest.mark.parametrize(
    ("version", "wrap", "match"),
    [
        ("0" * 32, False, "trained on phantoms version 0+.*retrain first"),
        (None, True, "cannot attack the model .*probabilities"),
    ],
)
def test_bad_victim_stops_before_any_run_or_file(
    tmp_path, monkeypatch, phantom_dir, tracking_uri, version, wrap, match
):
    monkeypatch.chdir(tmp_path)
    _fake_checkpoint(tmp_path / "victim.pt", phantom_dir, version)
    if wrap:
        import tasks.attack

        real = tasks.attack.load_classifier
        monkeypatch.setattr(
            tasks.attack,
            "load_classifier",
            lambda path: (ProbabilityModel(real(path)[0]), real(path)[1]),
        )
    with pytest.raises(DataError, match=match):
        attack_flow(
            preset="tiny",
            overrides=[f"dataset.data_dir={phantom_dir}"],
            checkpoint=str(tmp_path / "victim.pt"),
        )
    assert _runs(tracking_uri) == []
    assert not any((tmp_path / d).exists() for d in ("outputs", "metrics", "plots"))
