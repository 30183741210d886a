"""Report flow: the trust report joining every MedSec run of the tracking store.

Writes ``reports/trust_report.html`` (self-contained), ``reports/trust_report.md`` and
``metrics/leaderboard.json`` (headline figures only) under the output root, and logs the same
tables to a ``medsec.stage=report`` run. ``compare_flow``: what changed between two runs, two
``dvc exp`` experiments or two commits (``medsec report --compare A B``).
"""

from __future__ import annotations

import re
import tempfile

from prefect import flow

from flows.outputs import METRICS, REPORTS, at, write_metrics
from medsec.errors import DataError
from medsec.io import write_text
from medsec.report.compare import compare, compare_markdown
from medsec.report.document import build_report
from tasks.common import load_config_task
from tasks.report import dvc_exp_commits, fetch_runs_task
from tasks.tracking import (
    log_dict,
    log_metrics,
    log_text,
    repo_root,
    resolve_tracking_uri,
    tracked_run,
)

REPORT_HTML = REPORTS / "trust_report.html"
REPORT_MD = REPORTS / "trust_report.md"
LEADERBOARD = METRICS / "leaderboard.json"
RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def _store(uri: str) -> str:
    """The store named without a local path (no user folder reaches the report)."""
    if uri.startswith(("http://", "https://")):
        return uri.split("://", 1)[1].split("/", 1)[0]
    return uri.split(":", 1)[0] + " store"


@flow(name="report")
def report_flow(config: str | None = None, preset: str | None = None,
                overrides: list[str] | None = None, dataset: str | None = None,
                commit: str | None = None, out: str = ".") -> dict:
    """Build the trust report from the FINISHED runs of the tracking store (optionally one
    ``dataset`` / one ``commit`` prefix). DataError (exit 2 in the CLI) when none match.
    Returns the output paths, the report run id and the headline figures."""
    cfg = load_config_task(config, preset, overrides)
    uri = resolve_tracking_uri(cfg)
    with tempfile.TemporaryDirectory(prefix="medsec-report-") as tmp:
        records = fetch_runs_task(uri, tmp, dataset=dataset, commit=commit)
        source = (f"{len(records)} runs from the {_store(uri)}"
                  + (f", commit {commit}" if commit else ""))
        report = build_report(records, dataset, source=source)
    html, md = at(out, REPORT_HTML), at(out, REPORT_MD)
    write_text(html, report.html)
    write_text(md, report.markdown)
    write_metrics(at(out, LEADERBOARD), report.headline)
    boards = report.boards
    tags = {"medsec.report.datasets": ",".join(b.dataset for b in boards),
            "medsec.report.runs": str(len(records))}
    if len(boards) == 1:
        tags["medsec.dataset"] = boards[0].dataset
    with tracked_run("report", cfg, boards[0].data_version, tags=tags,
                     run_name="trust-report") as run:
        log_text(report.html, "report/trust_report.html")
        log_text(report.markdown, "report/trust_report.md")
        log_dict(report.tables, "report/tables.json")
        log_dict(report.headline, "report/leaderboard.json")
        log_metrics({"report_rows": float(sum(len(b.rows) for b in boards)),
                     "report_figures": float(report.n_figures)})
    return {"html": str(html), "markdown": str(md), "leaderboard": str(at(out, LEADERBOARD)),
            "run_id": run.info.run_id, "headline": report.headline,
            "n_figures": report.n_figures}


def _side(selector: str, uri: str, tmp: str) -> list:
    """Runs of one side, the first that matches: the run ``selector`` (32 hex digits), the
    runs of the ``dvc exp`` experiment of that name (tag ``medsec.dvc_exp``), every run of a
    commit (prefix), the runs logged at the commit of the experiment's git ref
    (``refs/exps/../<name>``: runs without the tag). DataError naming it when none match."""
    if RUN_ID.match(selector):
        return fetch_runs_task(uri, tmp, run_ids=[selector])
    records = fetch_runs_task(uri, tmp, dvc_exp=selector)
    if records:
        return records
    records = fetch_runs_task(uri, tmp, commit=selector)
    if records:
        return records
    commits = dvc_exp_commits(selector, repo_root())
    for sha in commits:
        records += fetch_runs_task(uri, tmp, commit=sha)
    if records:
        return records
    if commits:
        raise DataError(f"compare: dvc experiment {selector!r} (commit {commits[0][:7]}) has no "
                        "finished MedSec run tagged medsec.dvc_exp or logged at its commit")
    raise DataError(f"compare: {selector!r} is neither a run id, a dvc experiment name nor a "
                    "commit with finished runs")


@flow(name="report-compare")
def compare_flow(a: str, b: str, config: str | None = None, preset: str | None = None,
                 overrides: list[str] | None = None) -> str:
    """Markdown table of what changed per leaderboard column from ``a`` to ``b`` (run ids,
    ``dvc exp`` names or commit prefixes: see :func:`_side`), with intervals where logged."""
    cfg = load_config_task(config, preset, overrides)
    uri = resolve_tracking_uri(cfg)
    with tempfile.TemporaryDirectory(prefix="medsec-compare-") as tmp:
        changes = compare(_side(a, uri, tmp), _side(b, uri, tmp))
    return compare_markdown(changes, a, b)


if __name__ == "__main__":
    report_flow()
