"""The privacy sweep's points are mapped Prefect tasks (``privacy-<label>``): each point its
own task run, the same numbers as the point computed directly, a failed point reported (FAILED
child run, status line) while the others complete. Tiny: SYNTHETIC phantoms, 1 epoch,
2 reference models, loss attack only (~1 min on 1 core)."""

from __future__ import annotations

import json

import pytest

import mlflow
from flows.privacy import privacy_flow
from medsec.stages import privacy as stage

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]

OVERRIDES = [
    "privacy.sweep=[3,8]", "train.epochs=1", "train.num_threads=1", "runner.retries=0",
    "privacy.audit.num_reference=2", "privacy.audit.attacks=[loss]",
    "privacy.audit.declared_attack=loss", "privacy.canary.enabled=false",
]


def test_sweep_points_are_mapped_tasks_and_a_failed_point_is_reported(
        tmp_path, monkeypatch, phantom_dir, tracking_uri):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter

    from tasks.common import load_config_task, load_dataset_task

    monkeypatch.chdir(tmp_path)
    overrides = [f"dataset.data_dir={phantom_dir}", *OVERRIDES]
    real = stage.recipe_audit

    def fail_eps3(cfg, *args, **kwargs):  # one broken point: the sweep must go on
        if cfg.privacy.dp.enabled and cfg.privacy.dp.target_epsilon == 3:
            raise RuntimeError("injected failure at epsilon 3")
        return real(cfg, *args, **kwargs)

    monkeypatch.setattr(stage, "recipe_audit", fail_eps3)
    result = privacy_flow(preset="tiny", overrides=overrides)
    monkeypatch.setattr(stage, "recipe_audit", real)

    assert result["status"]["none"] == result["status"]["dp-eps8"] == "ok"
    assert result["status"]["dp-eps3"].startswith("failed: RuntimeError: injected failure")
    with get_client(sync_client=True) as client:
        task_runs = client.read_task_runs(task_run_filter=TaskRunFilter(
            name={"like_": "privacy-"}))
    states = {r.name: r.state.name for r in task_runs if r.name.startswith(
        ("privacy-none", "privacy-dp-eps"))}
    assert states == {"privacy-none": "Completed", "privacy-dp-eps8": "Completed",
                      "privacy-dp-eps3": "Failed"}

    mlflow.set_tracking_uri(tracking_uri)
    runs = {r.data.tags["medsec.privacy"]: r
            for r in mlflow.search_runs(search_all_experiments=True, output_format="list")}
    assert runs["dp-eps3"].info.status == "FAILED"
    assert "injected failure" in runs["dp-eps3"].data.tags["medsec.privacy.error"]
    assert runs["dp-eps8"].info.status == runs["none"].info.status == "FINISHED"
    from tasks.tracking import device_tags  # the process hardware: cpu here, gpu (<name>)

    for label in ("none", "dp-eps8"):  # the report's Device column: where the point trained
        assert {k: runs[label].data.tags.get(k) for k in device_tags()} == device_tags()
    report = (tmp_path / "reports" / "privacy" / "privacy_utility.md").read_text()
    assert "sweep point dp-eps3: failed: RuntimeError: injected failure" in report
    table = json.loads((tmp_path / "metrics" / "privacy.json").read_text())
    assert set(table) == {"none", "dp-eps8"}

    # Oracle: the eps-8 point computed directly, outside Prefect, in this process (the
    # sequential path the sweep used before it was mapped): the same target, the same numbers.
    cfg = load_config_task.fn(preset="tiny", overrides=overrides)
    data = load_dataset_task.fn(cfg)
    point = next(p for p in stage.sweep_points(cfg) if p.label == "dp-eps8")
    pool = stage.audit_pool(cfg, data)
    direct = stage.recipe_audit(point.cfg, data, pool)
    logged = runs["dp-eps8"].data.metrics
    assert logged["epsilon"] == pytest.approx(direct.target.meta["privacy"]["epsilon"])
    assert logged["mia_n_members"] == direct.metrics["mia_n_members"]
    assert logged["mia_auc"] == pytest.approx(direct.metrics["mia_auc"])
