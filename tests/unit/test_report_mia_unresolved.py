"""Leaderboard TPR@low-FPR cells: a privacy run whose audit had too few non-members for the
FPR (n_nonmembers * fpr < 10 expected false positives, so the audit logs no value) is an empty
cell that says *unresolved* with the sample size, not "did not log"; a resolved one keeps its
value and Clopper-Pearson interval."""

from __future__ import annotations

from medsec.metrics.privacy import mia_summary
from medsec.report.leaderboard import build
from medsec.report.records import RunRecord


def _privacy_run(metrics: dict) -> RunRecord:
    tags = {"medsec.stage": "privacy", "medsec.dataset": "pneumoniamnist",
            "medsec.model": "small_cnn", "medsec.data_version": "v1",
            "medsec.privacy": "dp-eps8", "medsec.audit": "recipe"}
    return RunRecord("a" * 32, tags, metrics, {}, start_time=1, end_time=2)


def test_unresolved_tpr_cell_says_why_with_sample_size() -> None:
    # the audit's own summary on 2603 non-members (the PneumoniaMNIST pool): 0.1% unresolved
    rng = __import__("numpy").random.default_rng(0)
    summary = mia_summary(rng.normal(0.2, 1, 2603), rng.normal(0, 1, 2603), warn=False)
    assert summary.metrics["mia_tpr_at_0.1pct_fpr"] is None  # oracle: 2.6 expected FP < 10
    logged = {k: v for k, v in summary.metrics.items() if v is not None}  # what MLflow holds
    row = build([_privacy_run(logged)])[0].rows[0]
    low = row.cells["mia_tpr_at_0.1pct_fpr"]
    assert low.empty and low.run_id == "a" * 32
    assert low.reason.startswith("unresolved: 2603 non-members expect 2.6 false positives")
    assert ">= 10000 non-members" in low.reason and "did not log" not in low.reason
    one = row.cells["mia_tpr_at_1pct_fpr"]  # 26 expected FP: resolved, with its interval
    assert one.value == summary.metrics["mia_tpr_at_1pct_fpr"]
    assert one.low is not None and one.low <= one.value <= one.high


def test_missing_tpr_without_sample_size_keeps_did_not_log() -> None:
    row = build([_privacy_run({"mia_auc": 0.5})])[0].rows[0]
    assert "did not log mia_tpr_at_0.1pct_fpr" in row.cells["mia_tpr_at_0.1pct_fpr"].reason
