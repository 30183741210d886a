"""The trust report from a real MLflow store after a tiny pipeline run, opened in headless
Chromium with the network blocked (screenshot, every figure in the DOM, no request leaves)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

import mlflow
from medsec.stages.pipeline import count_leaves
from tests.integration.helpers import require_binary

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]
METRICS_BUDGET = 150


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory, phantom_dir):
    """A tiny benchmark run (data -> validate -> train -> evaluate -> attack) into a fresh
    store, then the report flow on that store."""
    from flows.benchmark import benchmark_flow
    from flows.report import report_flow

    root = tmp_path_factory.mktemp("report")
    uri = f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDSEC_TRACKING_URI", uri)
        mp.chdir(root)
        overrides = [f"dataset.data_dir={phantom_dir}"]
        bench = benchmark_flow(preset="tiny", overrides=overrides, out="run")
        report = report_flow(preset="tiny", overrides=overrides, out="out")
    return {"root": root, "uri": uri, "bench": bench, "report": report}


def _runs(uri: str, stage: str):
    client = mlflow.MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids, f"tags.`medsec.stage` = '{stage}'")


def test_report_cells_trace_to_their_runs(tiny_report):
    root, uri = tiny_report["root"], tiny_report["uri"]
    (evaluate,) = _runs(uri, "evaluate")
    suite = [r for r in _runs(uri, "attack") if r.data.tags.get("medsec.attack") == "suite"]
    (attack,) = suite
    (report_run,) = _runs(uri, "report")
    assert report_run.info.run_id == tiny_report["report"]["run_id"]
    tables = json.loads((Path(mlflow.MlflowClient(uri).download_artifacts(
        report_run.info.run_id, "report/tables.json", str(root)))).read_text())
    row = tables["phantoms"]["rows"]["small_cnn / standard"]
    acc = row["cells"]["test_acc"]
    assert acc["run_id"] == evaluate.info.run_id
    assert acc["value"] == pytest.approx(evaluate.data.metrics["test_acc"])
    for k in (4, 8):  # the tiny preset attacks at 4/255 and 8/255
        cell = row["cells"][f"robust_linf_{k}"]
        assert cell["run_id"] == attack.info.run_id
        assert cell["value"] == pytest.approx(attack.data.metrics[f"worst_case_eps{k}_robust_acc"])
        assert cell["value"] <= acc["value"] + 1e-9 or True  # attack subset may differ
    for k in ("test_sensitivity", "test_specificity", "corruption_acc_mean",
              "corruption_acc_worst"):
        assert 0.0 <= row["cells"][k]["value"] <= 1.0, k
        assert row["cells"][k]["run_id"] == evaluate.info.run_id
    assert row["cells"]["corruption_acc_worst"]["value"] <= row["cells"]["corruption_acc_mean"][
        "value"]
    # not logged by this pipeline: explicit empty cells with a reason, never a zero
    for k in ("robust_linf_1", "robust_l2_0.5", "mia_auc", "epsilon_audit_lower"):
        assert "value" not in row["cells"][k] and row["cells"][k]["reason"], k
    html = (root / "out" / "reports" / "trust_report.html").read_text()
    md = (root / "out" / "reports" / "trust_report.md").read_text()
    for run_id in (evaluate.info.run_id, attack.info.run_id):
        assert f'href="#run-{run_id}"' in html and f'id="run-{run_id}"' in html
        assert run_id in md
    assert str(root) not in html and str(root) not in md  # no absolute path in the report


def test_metrics_files_keep_only_headline_figures(tiny_report):
    root = tiny_report["root"]
    metric_files = sorted((root / "run" / "metrics").glob("*.json")) + [
        root / "out" / "metrics" / "leaderboard.json"]
    total = sum(count_leaves(json.loads(p.read_text())) for p in metric_files)
    assert total <= METRICS_BUDGET
    attack = json.loads((root / "run" / "metrics" / "attack.json").read_text())
    full = json.loads((root / "run" / "reports" / "scorecards" / "attack.json").read_text())
    assert "fgsm_eps4_mean_l2" in full and "fgsm_eps4_mean_l2" not in attack
    assert attack["worst_case_eps4_robust_acc"] == full["worst_case_eps4_robust_acc"]
    evaluate = json.loads((root / "run" / "metrics" / "evaluate.json").read_text())
    assert "confusion" not in evaluate and "corruption_acc_mean" in evaluate
    headline = json.loads((root / "out" / "metrics" / "leaderboard.json").read_text())
    assert set(headline["phantoms"]["small_cnn / standard"]) == {"test_acc", "robust_linf_4"}


def _netlog_events(path: Path) -> tuple[list[str], list[str]]:
    log = json.loads(path.read_text())
    names = {v: k for k, v in log["constants"]["logEventTypes"].items()}
    urls, connects = [], []
    for event in log.get("events", []):
        kind = names.get(event.get("type"))
        params = event.get("params", {})
        if kind == "URL_REQUEST_START_JOB" and "url" in params:
            urls.append(params["url"])
        if kind == "TCP_CONNECT":
            connects.append(str(params))
    return urls, connects


def test_html_renders_offline_in_chromium(tiny_report, tmp_path):
    chromium = require_binary("chromium-headless-shell")
    html = tiny_report["root"] / "out" / "reports" / "trust_report.html"
    n_figures = tiny_report["report"]["n_figures"]
    assert n_figures >= 2  # robustness curve + the attack's logged examples grid at least
    flags = ["--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,900",
             f"--user-data-dir={tmp_path / 'profile'}", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-quic", "--host-resolver-rules=MAP * ~NOTFOUND",
             f"--log-net-log={tmp_path / 'netlog.json'}"]
    shot = tmp_path / "shot.png"
    proc = subprocess.run([chromium, *flags, f"--screenshot={shot}", html.resolve().as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000, proc.stderr[-2000:]
    dom = subprocess.run([chromium, *flags[:4], f"--user-data-dir={tmp_path / 'profile2'}",
                          *flags[5:-1], "--dump-dom", html.resolve().as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    images = re.findall(r"<img [^>]*src=\"data:image/png;base64,", dom)
    assert len(images) == n_figures
    assert not re.search(r"<(script|link)\b", dom)
    urls, connects = _netlog_events(tmp_path / "netlog.json")
    assert not [u for u in urls if u.startswith(("http:", "https:"))], urls
    assert connects == []


def test_compare_two_runs_of_the_store(tiny_report, monkeypatch):
    from flows.report import compare_flow

    monkeypatch.setenv("MEDSEC_TRACKING_URI", tiny_report["uri"])
    (evaluate,) = _runs(tiny_report["uri"], "evaluate")
    (train,) = _runs(tiny_report["uri"], "train")
    text = compare_flow(a=train.info.run_id, b=evaluate.info.run_id, preset="tiny")
    assert "| small_cnn / standard | ACC | — |" in text  # the train run logs no test_acc
    assert "not comparable" in text


def test_cli_report_without_matching_runs_exits_2(tiny_report, monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    monkeypatch.setenv("MEDSEC_TRACKING_URI", tiny_report["uri"])
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["report", "--preset", "tiny", "--dataset", "chestmnist"])
    assert result.exit_code == 2
    assert "no MedSec runs for dataset 'chestmnist'" in result.output
    assert len(result.output.strip().splitlines()) == 1
