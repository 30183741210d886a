"""Markdown version of the trust report (for the README and MLflow): the same tables as the
HTML, empty cells as ``—`` with their reasons listed under the table, run ids per row."""

from __future__ import annotations

from medsec.report.leaderboard import COLUMNS, Cell, Leaderboard, Table


def fmt(cell: Cell) -> str:
    """``0.934 [0.912, 0.951]`` / text / ``—`` for an empty cell."""
    if cell.text is not None:
        return cell.text
    if cell.value is None:
        return "—"
    out = f"{cell.value:.0f}" if abs(cell.value) >= 100 else f"{cell.value:.3f}"
    if cell.low is not None and cell.high is not None:
        out += f" [{cell.low:.3f}, {cell.high:.3f}]"
    return out


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(_escape(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_escape(c) for c in row) + " |" for row in rows]
    return lines


def leaderboard_markdown(board: Leaderboard) -> list[str]:
    lines = [f"## {board.dataset} (data version {board.data_version[:12]})", ""]
    lines += [f"> {note}" for note in board.notes] + ([""] if board.notes else [])
    if board.rows:
        header = ["model / recipe", *(c.title for c in COLUMNS)]
        lines += _table(header, [[r.label, *(fmt(r.cells[c.key]) for c in COLUMNS)]
                                 for r in board.rows])
        lines += ["", "Per row: runs, warnings and why cells are empty:", ""]
        for row in board.rows:
            runs = ", ".join(f"{s} `{r.run_id}`" for s, r in sorted(row.runs.items()))
            lines.append(f"- **{row.label}**: {runs}")
            lines += [f"  - ⚠ {w}" for w in row.warnings]
            empty = [f"{c.title}: {row.cells[c.key].reason}" for c in COLUMNS
                     if row.cells[c.key].empty]
            if empty:
                lines.append("  - empty: " + "; ".join(empty))
        lines.append("")
    for table in (board.segmentation, board.deepfake):
        if table is not None:
            lines += table_markdown(table)
    return lines


def table_markdown(table: Table) -> list[str]:
    lines = [f"### {table.title}", ""]
    lines += _table(["model", *(t for _, t in table.columns)],
                    [[label, *(fmt(cells[k]) for k, _ in table.columns)]
                     for label, cells in table.rows])
    lines.append("")
    for label, cells in table.rows:
        ids = sorted({c.run_id for c in cells.values() if c.run_id})
        lines.append(f"- {label}: runs {', '.join(f'`{i}`' for i in ids) or 'none'}")
        empty = [f"{t}: {cells[k].reason}" for k, t in table.columns if cells[k].empty]
        if empty:
            lines.append("  - empty: " + "; ".join(empty))
    lines += [""] + [f"- *{k}*: {d}" for k, d in table.definitions.items()] + [""]
    return lines


def definitions_markdown() -> list[str]:
    return ["## Column definitions", ""] + [f"- **{c.title}** (`{c.key}`): {c.definition}"
                                             for c in COLUMNS] + [""]


def report_markdown(boards: list[Leaderboard], title: str = "MedSec trust report",
                    figures_note: str = "") -> str:
    """The whole report as Markdown (figures are in the HTML version)."""
    lines = [f"# {title}", ""]
    if figures_note:
        lines += [figures_note, ""]
    for board in boards:
        lines += leaderboard_markdown(board)
    lines += definitions_markdown()
    return "\n".join(lines).rstrip() + "\n"
