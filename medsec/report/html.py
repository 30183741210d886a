"""Self-contained HTML trust report: inline CSS, figures as ``data:image/png;base64`` images,
no script, font, stylesheet or image fetched from anywhere (renders offline).

Every number is a link to its run in the run index (``#run-<id>``) with the run id and the
source metric as its tooltip; empty cells show their reason.
"""

from __future__ import annotations

import base64
from html import escape

from medsec.report.leaderboard import COLUMNS, Cell, Leaderboard, Table
from medsec.report.markdown import fmt
from medsec.report.records import RunRecord

STYLE = """
body{font-family:sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;font-size:12px;margin:0.5em 0 1em}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:right;vertical-align:top}
th{background:#f0f0f0}td.label{text-align:left;white-space:nowrap}
td.empty{color:#999;font-size:10px;max-width:9em;text-align:left}
a{color:#0645ad;text-decoration:none}.warn{color:#a15c00;font-size:11px}
figure{display:inline-block;margin:0.5em;vertical-align:top}
figcaption{font-size:11px;color:#555;max-width:480px}
.note{font-size:11px;color:#555}code{font-size:11px}
"""


def img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def cell_html(cell: Cell) -> str:
    if cell.empty:
        reason = escape(cell.reason or "")
        return f'<td class="empty" title="{reason}">— {reason}</td>'
    title = f"run {cell.run_id} · {cell.source}" if cell.run_id else cell.source
    text = escape(fmt(cell))
    if cell.run_id:
        text = f'<a href="#run-{escape(cell.run_id)}">{text}</a>'
    return f'<td title="{escape(title)}">{text}</td>'


def leaderboard_html(board: Leaderboard) -> str:
    parts = [f"<h2>{escape(board.dataset)} <small>(data version "
             f"{escape(board.data_version[:12])})</small></h2>"]
    parts += [f'<p class="note">{escape(n)}</p>' for n in board.notes]
    if board.rows:
        head = "".join(f'<th title="{escape(c.definition)}">{escape(c.title)}</th>'
                       for c in COLUMNS)
        body = []
        for row in board.rows:
            warn = "".join(f'<div class="warn">⚠ {escape(w)}</div>' for w in row.warnings)
            cells = "".join(cell_html(row.cells[c.key]) for c in COLUMNS)
            body.append(f'<tr><td class="label">{escape(row.label)}{warn}</td>{cells}</tr>')
        parts.append(f"<table><tr><th>model / recipe</th>{head}</tr>{''.join(body)}</table>")
    for table in (board.segmentation, board.deepfake):
        if table is not None:
            parts.append(table_html(table))
    return "\n".join(parts)


def table_html(table: Table) -> str:
    head = "".join(f"<th>{escape(t)}</th>" for _, t in table.columns)
    rows = "".join(f'<tr><td class="label">{escape(label)}</td>'
                   + "".join(cell_html(cells[k]) for k, _ in table.columns) + "</tr>"
                   for label, cells in table.rows)
    defs = "".join(f"<li><b>{escape(k)}</b>: {escape(d)}</li>"
                   for k, d in table.definitions.items())
    return (f"<h3>{escape(table.title)}</h3><table><tr><th>model</th>{head}</tr>{rows}</table>"
            f'<ul class="note">{defs}</ul>')


def figures_html(figures: list[tuple[str, bytes | None, str | None]]) -> str:
    """``(caption, png or None, why skipped)`` as figures, skipped ones as a note."""
    out = []
    for caption, png, why in figures:
        if png is None:
            out.append(f'<p class="note">Figure skipped: {escape(caption)}: '
                       f'{escape(why or "")}</p>')
        else:
            out.append(f"<figure>{img(png, caption)}<figcaption>{escape(caption)}"
                       "</figcaption></figure>")
    return "\n".join(out)


RUN_TAGS = ("preset", "defense", "privacy", "attack", "audit", "mia_attack")


def runs_html(runs: list[RunRecord]) -> str:
    def row(r: RunRecord) -> str:
        tags = ", ".join(f"{k}={r.tag(k)}" for k in RUN_TAGS if r.tag(k))
        cells = [r.stage, r.dataset, r.model, r.commit[:12], tags]
        return (f'<tr id="run-{escape(r.run_id)}"><td class="label"><code>{escape(r.run_id)}'
                "</code></td>" + "".join(f'<td class="label">{escape(c)}</td>' for c in cells)
                + "</tr>")

    rows = "".join(row(r) for r in runs)
    return ("<h2>Runs</h2><table><tr><th>run id</th><th>stage</th><th>dataset</th><th>model"
            f"</th><th>commit</th><th>tags</th></tr>{rows}</table>")


def report_html(boards: list[Leaderboard], figures: dict[str, list], runs: list[RunRecord],
                title: str = "MedSec trust report", source: str = "") -> str:
    """The whole report; ``figures`` by dataset: ``(caption, png or None, why)``."""
    defs = "".join(f"<li><b>{escape(c.title)}</b> (<code>{escape(c.key)}</code>): "
                   f"{escape(c.definition)}</li>" for c in COLUMNS)
    body = [f"<h1>{escape(title)}</h1>"]
    if source:
        body.append(f'<p class="note">{escape(source)}</p>')
    for board in boards:
        body.append(leaderboard_html(board))
        body.append(figures_html(figures.get(board.dataset, [])))
    body.append(f"<h2>Column definitions</h2><ul>{defs}</ul>")
    body.append(runs_html(runs))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")
