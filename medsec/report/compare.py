"""``medsec report --compare A B``: what changed per leaderboard column between two sets of
runs (two run ids, or all runs of two commits), with intervals where logged."""

from __future__ import annotations

from dataclasses import dataclass

from medsec.errors import DataError
from medsec.report.leaderboard import COLUMNS, Cell, Row, build_rows
from medsec.report.markdown import fmt
from medsec.report.records import RunRecord


@dataclass(frozen=True)
class Change:
    """One column of one row: ``a`` and ``b`` cells, ``delta`` = b - a (None if either is
    empty), ``overlap``: whether both intervals exist and overlap (None without intervals)."""

    row: str
    column: str
    a: Cell
    b: Cell

    @property
    def delta(self) -> float | None:
        if self.a.value is None or self.b.value is None:
            return None
        return self.b.value - self.a.value

    @property
    def overlap(self) -> bool | None:
        a, b = self.a, self.b
        if None in (a.low, a.high, b.low, b.high):
            return None
        return not (a.high < b.low or b.high < a.low)

    def verdict(self) -> str:
        if self.delta is None:
            return "not comparable (" + "; ".join(
                f"{side}: {c.reason}" for side, c in (("A", self.a), ("B", self.b)) if c.empty
            ) + ")" if (self.a.empty or self.b.empty) else "text changed"
        if self.overlap is None:
            return "no interval logged"
        return "intervals overlap: not resolved" if self.overlap else "intervals disjoint"


def _rows(records: list[RunRecord], side: str) -> list[Row]:
    rows = build_rows(records)
    if not rows:
        raise DataError(f"compare {side}: no classifier run (train/evaluate/attack/defense/"
                        "privacy/federated) among its runs")
    return rows


def compare(a: list[RunRecord], b: list[RunRecord]) -> list[Change]:
    """Changes between the rows of ``a`` and ``b``, matched by row label (a single row on each
    side is matched whatever its label). DataError when the datasets differ."""
    datasets = {r.dataset for r in a} | {r.dataset for r in b}
    if len(datasets) > 1:
        raise DataError(f"compare: incompatible datasets {', '.join(sorted(datasets))} "
                        "(compare runs of one dataset)")
    rows_a, rows_b = _rows(a, "A"), _rows(b, "B")
    if len(rows_a) == 1 and len(rows_b) == 1:
        pairs = [(f"{rows_a[0].label} -> {rows_b[0].label}"
                  if rows_a[0].label != rows_b[0].label else rows_a[0].label,
                  rows_a[0], rows_b[0])]
    else:
        by_label = {r.label: r for r in rows_b}
        pairs = [(r.label, r, by_label[r.label]) for r in rows_a if r.label in by_label]
        if not pairs:
            raise DataError("compare: A and B share no (model, recipe) row")
    changes = []
    for label, ra, rb in pairs:
        for column in COLUMNS:
            ca, cb = ra.cells[column.key], rb.cells[column.key]
            if ca.empty and cb.empty:
                continue
            changes.append(Change(label, column.title, ca, cb))
    return changes


def compare_markdown(changes: list[Change], a: str, b: str) -> str:
    lines = [f"# Compare A = {a} vs B = {b}", "",
             "| row | column | A | B | B - A | verdict |", "|---|---|---|---|---|---|"]
    for c in changes:
        delta = "—" if c.delta is None else f"{c.delta:+.3f}"
        lines.append(f"| {c.row} | {c.column} | {fmt(c.a)} | {fmt(c.b)} | {delta} | "
                     f"{c.verdict()} |")
    return "\n".join(lines) + "\n"
