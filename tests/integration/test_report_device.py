"""The report's Device column through the real train flow: the run that trained the model
carries the resolved device (``medsec.device``) and precision, and the leaderboard cell reads
it (not the configured ``train.accelerator``)."""

from __future__ import annotations

import pytest

import mlflow
from flows.train import train_flow
from medsec.report.leaderboard import build
from medsec.training.config import Hardware, default_hardware, use_hardware
from tasks.report import fetch_runs_task
from tasks.tracking import DEVICE_TAG, PRECISION_TAG, device_tags

pytestmark = pytest.mark.integration


def test_train_flow_tags_the_resolved_device_and_the_report_shows_it(
        tmp_path, monkeypatch, phantom_dir, tracking_uri):
    monkeypatch.chdir(tmp_path)
    overrides = [f"dataset.data_dir={phantom_dir}", "train.epochs=1", "train.num_threads=1",
                 "train.accelerator=cpu"]
    previous = default_hardware()
    try:
        trained = train_flow(preset="tiny", overrides=overrides)
    finally:
        use_hardware(previous)  # the flow set train.accelerator=cpu for the process
    assert trained["meta"]["device"] == "cpu"  # the model card: where it trained

    run = mlflow.MlflowClient(tracking_uri).get_run(trained["run_id"])
    assert run.data.tags[DEVICE_TAG] == "cpu"
    assert run.data.tags[PRECISION_TAG] == "32"

    (board,) = build(fetch_runs_task.fn(tracking_uri, tmp_path / "artifacts"))
    (row,) = board.rows
    cell = row.cells["device"]
    assert cell.text == "cpu" and cell.run_id == trained["run_id"]
    assert cell.source == "train:tag"  # not "auto x1 (configured)" from the params
    assert row.cells["epsilon"].text.startswith("non-private")


def test_device_tags_without_a_model_card_resolve_the_process_hardware():
    previous = default_hardware()
    try:
        use_hardware(Hardware(accelerator="cpu", precision="bf16-mixed"))
        tags = device_tags()  # the federated simulation: the clients' default hardware
    finally:
        use_hardware(previous)
    assert tags == {DEVICE_TAG: "cpu", PRECISION_TAG: "bf16-mixed"}
    gpu = device_tags({"device": "gpu x2", "precision": "bf16-mixed"})
    assert gpu[PRECISION_TAG] == "bf16-mixed" and gpu[DEVICE_TAG].startswith("gpu x2")
