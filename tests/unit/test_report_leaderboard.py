"""Leaderboard rows/cells from plain run records: traceability, explicit empty cells, the
attack-failure warnings, datasets kept apart, comparison with intervals, headline size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medsec.errors import DataError
from medsec.report.compare import compare, compare_markdown
from medsec.report.document import build_report
from medsec.report.leaderboard import COLUMN_KEYS, build
from medsec.report.records import RunRecord
from medsec.stages.pipeline import count_leaves, headline_metrics, stage_of_metrics

REPO = Path(__file__).resolve().parents[2]
_N = iter(range(10_000))


def rec(stage: str, metrics: dict, dataset: str = "pneumoniamnist", version: str = "v1",
        **tags: str) -> RunRecord:
    n = next(_N)
    base = {"medsec.stage": stage, "medsec.dataset": dataset, "medsec.model": "resnet18",
            "medsec.data_version": version, "medsec.git_commit": "abc123"}
    return RunRecord(f"{n:032x}", base | {f"medsec.{k.replace('__', '.')}": v
                                         for k, v in tags.items()},
                     metrics, {}, start_time=1000 + n, end_time=2000 + n)


def pipeline_records(dataset: str = "pneumoniamnist", version: str = "v1") -> list[RunRecord]:
    return [
        rec("train", {"fit_seconds": 12.5}, dataset, version, privacy="none", device="cpu"),
        rec("evaluate", {"test_acc": 0.9, "test_auc": 0.95, "test_sensitivity": 0.93,
                         "test_specificity": 0.8, "corruption_acc_mean": 0.7,
                         "corruption_acc_worst": 0.4}, dataset, version),
        rec("attack", {"worst_case_eps2_robust_acc": 0.5, "worst_case_eps4_robust_acc": 0.2,
                       "worst_case_eps8_robust_acc": 0.3, "pgd_eps4_robust_acc": 0.4,
                       "square_eps4_robust_acc": 0.25}, dataset, version, attack="suite",
            gradient_masking="none"),
        rec("attack", {"eps4_robust_acc": 0.1}, dataset, version, attack="pgd"),  # child
        rec("defense", {"clean_acc": 0.85, "robust_acc": 0.6, "epsilon": 4 / 255,
                        "flag_blackbox_stronger": 1.0, "train_seconds": 40.0}, dataset, version,
            defense="pgd_at", defense__name="pgd_at", defense__kind="training"),
        rec("privacy", {}, dataset, version, privacy="sweep"),
        rec("privacy", {"test_acc": 0.8, "mia_auc": 0.52, "mia_auc_ci_low": 0.50,
                        "mia_auc_ci_high": 0.54, "epsilon": 7.9, "epsilon_audit_lower": 0.3,
                        "fit_seconds": 30.0}, dataset, version, privacy="dp-eps8"),
    ]


def board_rows(records):
    (board,) = build(records)
    return board, {r.recipe: r for r in board.rows}


def test_rows_per_recipe_and_cells_name_their_run():
    records = pipeline_records()
    board, rows = board_rows(records)
    assert set(rows) == {"standard", "PGD-AT", "DP ε=8"}  # sweep summary, child runs: no row
    by_id = {r.run_id: r for r in records}
    for row in board.rows:
        assert set(row.cells) == set(COLUMN_KEYS)
        for key, cell in row.cells.items():
            if cell.value is not None:  # every number comes from a run that logged it
                stage, metric = cell.source.split(":")
                assert by_id[cell.run_id].metrics[metric] == cell.value, key
            else:
                assert cell.text or cell.reason, key  # never a silent zero
    std = rows["standard"]
    assert std.cells["robust_linf_4"].value == 0.2  # the attack suite, not its child run
    assert std.cells["test_sensitivity"].value == 0.93
    assert std.cells["epsilon"].text.startswith("non-private")
    assert std.cells["device"].text == "cpu"
    assert std.cells["mia_auc"].reason == "no privacy/federated run for this recipe"
    assert "did not log" in std.cells["robust_l2_0.5"].reason or \
        "L2" in std.cells["robust_l2_0.5"].reason
    dp = rows["DP ε=8"]
    assert (dp.cells["mia_auc"].low, dp.cells["mia_auc"].high) == (0.50, 0.54)
    assert dp.cells["epsilon_audit_lower"].value == 0.3
    assert dp.cells["robust_linf_4"].reason == "no attack or defense run for this recipe"
    assert rows["PGD-AT"].cells["robust_linf_4"].value == 0.6


def test_attack_failure_warnings():
    _, rows = board_rows(pipeline_records())
    warnings = " ".join(rows["standard"].warnings)
    assert "rises with epsilon (4/255: 0.200 -> 8/255: 0.300)" in warnings
    assert "Square beats every white-box attack at 4/255" in warnings
    assert "blackbox_stronger" in " ".join(rows["PGD-AT"].warnings)
    assert rows["DP ε=8"].warnings == []


def test_datasets_are_separate_and_old_data_versions_left_out():
    older = [r for r in pipeline_records(version="v0")]
    newer = pipeline_records(version="v1")
    other = pipeline_records(dataset="phantoms")
    boards = build(older + newer + other)
    assert [b.dataset for b in boards] == ["phantoms", "pneumoniamnist"]
    pneu = boards[1]
    assert pneu.data_version == "v1" and "left out" in pneu.notes[0]
    kept = {run.run_id for row in pneu.rows for run in row.runs.values()}
    assert kept <= {r.run_id for r in newer}
    (only,) = build(older + newer + other, dataset="phantoms")
    assert only.dataset == "phantoms"


def test_no_matching_runs_is_one_clear_error():
    with pytest.raises(DataError, match="^no MedSec runs in the tracking store"):
        build([])
    with pytest.raises(DataError, match="for dataset 'chestmnist'"):
        build(pipeline_records(), dataset="chestmnist")


def test_compare_reports_deltas_and_interval_overlap():
    a = rec("privacy", {"test_acc": 0.9, "mia_auc": 0.60, "mia_auc_ci_low": 0.58,
                        "mia_auc_ci_high": 0.62}, privacy="none")
    b = rec("privacy", {"test_acc": 0.8, "mia_auc": 0.52, "mia_auc_ci_low": 0.50,
                        "mia_auc_ci_high": 0.545}, privacy="dp-eps8")
    changes = {c.column: c for c in compare([a], [b])}
    assert changes["ACC"].delta == pytest.approx(-0.1)
    assert changes["MIA AUC"].overlap is False
    assert changes["MIA AUC"].verdict() == "intervals disjoint"
    assert changes["ACC"].verdict() == "no interval logged"
    text = compare_markdown(list(changes.values()), "A", "B")
    assert "| ε claimed |" in text and "0.600 [0.580, 0.620]" in text
    with pytest.raises(DataError, match="incompatible datasets"):
        compare([a], pipeline_records(dataset="phantoms"))


def test_report_documents_are_self_contained_and_traceable():
    records = pipeline_records()
    report = build_report(records)
    assert report.n_figures >= 2  # robustness curves, Pareto view (no ROC artifact: a note)
    assert report.html.count("data:image/png;base64,") == report.n_figures
    for forbidden in ("<script", "<link", "http://", "https://", "@import", "url("):
        assert forbidden not in report.html
    assert "Figure skipped: Membership-inference ROC" in report.html
    for r in records:
        if r.tag("attack") != "pgd" and r.tag("privacy") != "sweep":
            assert f"#run-{r.run_id}" in report.html and r.run_id in report.markdown
    assert "| resnet18 / standard | 0.900 | 0.950 |" in report.markdown
    headline = report.headline["pneumoniamnist"]
    assert headline["resnet18 / DP ε=8"] == {"test_acc": 0.8, "mia_auc": 0.52, "epsilon": 7.9}


def test_default_pipeline_metrics_fit_the_budget_with_the_declared_headlines():
    """The committed metrics/*.json of the default pipeline (full scorecards before this
    change: 1034 leaves) reduced by each stage's declared headline keys, plus a leaderboard of
    ten rows x four columns, stay within 150 figures."""
    total = 0
    for path in sorted((REPO / "metrics").glob("*.json")):
        if path.name == "leaderboard.json":
            continue
        stage = stage_of_metrics(path)
        assert stage is not None and stage.headline, path.name
        total += count_leaves(headline_metrics(stage, json.loads(path.read_text())))
    assert total + 10 * 4 <= 150


def test_headline_metrics_keep_structure_and_only_declared_keys():
    stage = stage_of_metrics("metrics/defense.json")
    full = {"jpeg": {"robust_acc": 0.5, "robust_acc_pgd": 0.7, "clean_acc": 0.9},
            "undefended": {"robust_acc": 0.1, "seconds": 3.0}}
    assert headline_metrics(stage, full) == {"jpeg": {"robust_acc": 0.5, "clean_acc": 0.9},
                                            "undefended": {"robust_acc": 0.1}}
    assert count_leaves({"a": [[1, 2], [3, 4]], "b": {"c": None}}) == 5


def test_canary_and_checkpoint_audits_land_on_their_model_rows():
    """A canary run (medsec.audit=canary) beside the recipe audit of the same DP point must not
    hide the recipe audit's MIA figures; a checkpoint audit of the train-stage model fills the
    standard row's privacy columns."""
    records = pipeline_records() + [
        rec("privacy", {"epsilon_audit_lower": 0.9, "epsilon": 7.9}, privacy="dp-eps8",
            audit="canary"),
        rec("privacy", {"mia_auc": 0.61, "mia_auc_ci_low": 0.58, "mia_auc_ci_high": 0.64},
            privacy="none", audit="checkpoint"),
    ]
    _, rows = board_rows(records)
    dp = rows["DP ε=8"]
    assert dp.cells["mia_auc"].value == 0.52  # from the recipe-audit run, not the canary run
    assert dp.cells["epsilon_audit_lower"].value == 0.9
    assert dp.cells["epsilon_audit_lower"].run_id == records[-2].run_id
    assert rows["standard"].cells["mia_auc"].value == 0.61
    assert rows["standard"].cells["test_acc"].value == 0.9  # still the evaluate stage's


def test_deepfake_table_ignores_its_canary_child_run():
    main = rec("deepfake", {"detector_auc_seen": 0.9, "tstr_acc": 0.8, "dp_eps8_tstr_acc": 0.6,
                            "dp_eps8_epsilon": 7.9, "dp_eps8_epsilon_audit_lower": 0.4})
    canary = rec("deepfake", {"epsilon_audit_lower": 0.4}, audit="canary")
    (board,) = build([main, canary])
    rows = dict(board.deepfake.rows)
    assert rows["GAN"]["detector_auc_seen"].value == 0.9
    assert rows["GAN DP eps8"]["epsilon_audit_lower"].value == 0.4
    assert rows["GAN DP eps8"]["detector_auc_seen"].reason
