"""The whole trust report from run records: leaderboards, figures, HTML, Markdown, headline."""

from __future__ import annotations

from dataclasses import dataclass

from medsec.report import figures as fig
from medsec.report.html import report_html
from medsec.report.leaderboard import Leaderboard, build
from medsec.report.markdown import report_markdown
from medsec.report.records import RunRecord


@dataclass(frozen=True)
class Report:
    """``html`` (self-contained), ``markdown``, ``headline`` (``metrics/leaderboard.json``),
    ``tables`` (every cell with its run id, for MLflow) and the leaderboards."""

    boards: list[Leaderboard]
    html: str
    markdown: str
    headline: dict
    tables: dict
    n_figures: int


Figures = list[tuple[str, bytes | None, str | None]]


def _figures(board: Leaderboard, runs: list[RunRecord]) -> Figures:
    out: Figures = []
    for caption, maker in (("Accuracy vs epsilon (robustness curves)", fig.robustness_png),
                           ("Membership-inference ROC (log-log)", fig.mia_roc_png),
                           ("Privacy-utility curve", fig.privacy_utility_png),
                           ("Accuracy x robustness x privacy", fig.pareto_png)):
        png, why = maker(board)
        out.append((caption, png, why))
        if maker is fig.mia_roc_png and png is None:
            out += [(c, p, None) for c, p in fig.logged_roc_pngs(board)]
    examples = fig.example_pngs(board, [r for r in runs if r.dataset == board.dataset])
    out += [(caption, png, None) for caption, png in examples]
    if not examples:
        out.append(("Adversarial / DeepFake examples", None,
                    "no example grid artifact (robustness/examples.png, deepfake/*.png) logged"))
    return out


def headline(boards: list[Leaderboard]) -> dict:
    """``{dataset: {row label: {column: value}}}``, only :data:`HEADLINE` columns; values
    None where the cell is empty."""
    return {b.dataset: b.headline() for b in boards if b.rows}


def tables(boards: list[Leaderboard]) -> dict:
    out = {}
    for b in boards:
        out[b.dataset] = {
            "data_version": b.data_version, "notes": b.notes,
            "rows": {r.label: {"warnings": r.warnings,
                               "runs": {s: run.run_id for s, run in r.runs.items()},
                               "cells": {k: c.to_dict() for k, c in r.cells.items()}}
                     for r in b.rows},
            **{t.title: {label: {k: c.to_dict() for k, c in cells.items()}
                         for label, cells in t.rows}
               for t in (b.segmentation, b.deepfake) if t is not None}}
    return out


def build_report(records: list[RunRecord], dataset: str | None = None,
                 source: str = "") -> Report:
    """Leaderboards of ``records`` (one per dataset; only ``dataset`` when given) rendered.
    DataError when no run matches."""
    boards = build(records, dataset)
    used = [r for r in records if r.dataset in {b.dataset for b in boards}]
    figures = {b.dataset: _figures(b, used) for b in boards}
    n_figures = sum(png is not None for f in figures.values() for _, png, _ in f)
    html = report_html(boards, figures, sorted(used, key=lambda r: (r.stage, r.start_time)),
                       source=source)
    note = ("Figures (robustness curves, membership ROC, privacy-utility, Pareto view, "
            "examples) are in the HTML version: reports/trust_report.html.")
    return Report(boards, html, report_markdown(boards, figures_note=note), headline(boards),
                  tables(boards), n_figures)
