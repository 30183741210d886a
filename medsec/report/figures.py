"""Report figures (matplotlib, Agg) as PNG bytes: robustness curves, membership ROC (log-log),
privacy-utility, the accuracy x robustness x privacy view, and logged example grids.

Each ``*_png`` returns ``(png bytes, None)`` or ``(None, why it is skipped)``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path

from medsec.report.leaderboard import LINF, Leaderboard

Figure = tuple[bytes | None, str | None]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    _plt().close(fig)
    return buffer.getvalue()


def robustness_png(board: Leaderboard) -> Figure:
    """Accuracy vs L∞ epsilon per row (clean accuracy at 0)."""
    series = []
    for row in board.rows:
        points = [(k, row.cells[f"robust_linf_{k}"].value) for k in LINF]
        points = [(k, v) for k, v in points if v is not None]
        if points:
            clean = row.cells["test_acc"].value
            series.append((row.label, ([(0, clean)] if clean is not None else []) + points))
    if not series:
        return None, "no row has a robust accuracy"
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for label, points in series:
        ax.plot([k for k, _ in points], [v for _, v in points], marker="o", label=label)
    ax.set(xlabel="L∞ epsilon (/255)", ylabel="accuracy (worst case)", ylim=(-0.02, 1.02),
           title=f"{board.dataset}: accuracy vs epsilon")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _png(fig), None


def _roc_points(path: Path) -> tuple[list[float], list[float]] | None:
    """``fpr``/``tpr`` lists from a logged ``*roc*.csv`` (columns fpr, tpr) or ``.json``."""
    try:
        if path.suffix == ".json":
            data = json.loads(path.read_text())
            return [float(x) for x in data["fpr"]], [float(x) for x in data["tpr"]]
        with path.open() as handle:
            rows = list(csv.DictReader(handle))
        return [float(r["fpr"]) for r in rows], [float(r["tpr"]) for r in rows]
    except (OSError, KeyError, ValueError, TypeError):
        return None


ROC_ARTIFACT = re.compile(r"roc.*\.(csv|json)$", re.IGNORECASE)


def mia_roc_png(board: Leaderboard) -> Figure:
    """Log-log ROC of the membership attacks from logged ROC artifacts (fpr/tpr)."""
    curves = []
    for row in board.rows:
        run = row.runs.get("privacy")
        if run is None:
            continue
        for name, path in sorted(run.artifacts.items()):
            if ROC_ARTIFACT.search(Path(name).name):
                points = _roc_points(path)
                if points:
                    curves.append((f"{row.recipe}: {Path(name).stem}", points))
    if not curves:
        return None, ("no membership ROC points (fpr/tpr csv/json) logged by the privacy runs"
                      + ("; their logged log-log ROC figures are shown below"
                         if logged_roc_pngs(board) else ""))
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4))
    for label, (fpr, tpr) in curves:
        pairs = [(f, t) for f, t in zip(fpr, tpr, strict=False) if f > 0 and t > 0]
        ax.loglog([f for f, _ in pairs], [t for _, t in pairs], label=label)
    ax.loglog([1e-4, 1], [1e-4, 1], "k--", lw=0.8, label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate",
           title=f"{board.dataset}: membership ROC")
    ax.legend(fontsize=6)
    return _png(fig), None


def logged_roc_pngs(board: Leaderboard) -> list[tuple[str, bytes]]:
    """The privacy runs' own log-log membership ROC figures (``privacy/mia_roc.png``)."""
    out = []
    for row in board.rows:
        run = row.runs.get("privacy")
        path = run.artifacts.get("privacy/mia_roc.png") if run is not None else None
        if path is not None and Path(path).is_file():
            out.append((f"Membership ROC (log-log), {row.label}: privacy run {run.run_id[:8]}",
                        Path(path).read_bytes()))
    return out


def privacy_utility_png(board: Leaderboard) -> Figure:
    """Test accuracy vs claimed epsilon (non-private recipes drawn at the right edge)."""
    points = []
    for row in board.rows:
        acc, eps = row.cells["test_acc"], row.cells["epsilon"]
        if acc.value is None or eps.empty:
            continue
        points.append((row.label, eps.value, acc.value))
    private = [p for p in points if p[1] is not None]
    if not private:
        return None, "no DP recipe with a claimed epsilon and a test accuracy"
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    right = max(p[1] for p in private) * 2
    for label, eps, acc in points:
        ax.scatter([eps if eps is not None else right], [acc])
        ax.annotate(label + ("" if eps is not None else " (∞)"), (eps or right, acc), fontsize=7)
    ax.set_xscale("log")
    ax.set(xlabel="claimed epsilon", ylabel="test accuracy",
           title=f"{board.dataset}: privacy-utility")
    ax.grid(alpha=0.3)
    return _png(fig), None


def pareto_png(board: Leaderboard) -> Figure:
    """Clean accuracy (x) vs the lowest logged L∞ robust accuracy at 4/255 or 8/255 (y);
    marker colour: MIA AUC where logged (grey: not logged)."""
    points = []
    for row in board.rows:
        acc = row.cells["test_acc"].value
        rob = next((row.cells[f"robust_linf_{k}"].value for k in (4, 8, 2)
                    if row.cells[f"robust_linf_{k}"].value is not None), None)
        if acc is not None and rob is not None:
            points.append((row.label, acc, rob, row.cells["mia_auc"].value))
    if len(points) < 1:
        return None, "no row has both a clean and a robust accuracy"
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for label, acc, rob, mia in points:
        colour = "lightgrey" if mia is None else plt.cm.viridis(min(max((mia - 0.5) * 4, 0), 1))
        ax.scatter([acc], [rob], s=60, color=colour, edgecolor="k")
        ax.annotate(label + ("" if mia is None else f" (MIA {mia:.2f})"), (acc, rob), fontsize=7)
    ax.set(xlabel="clean accuracy", ylabel="robust accuracy (L∞ 4/255 or nearest)",
           title=f"{board.dataset}: accuracy x robustness x privacy")
    ax.grid(alpha=0.3)
    return _png(fig), None


EXAMPLE_KINDS = (r"robustness/examples\.png", r"deepfake/samples\.png", r"deepfake/tampering\.png",
                 r"segmentation/[^/]*overlay\.png")
"""Example grids shown (one each, in this order): adversarial examples beside originals,
DeepFake samples, tampered images, a segmentation attack overlay."""


def example_pngs(board: Leaderboard, runs: list) -> list[tuple[str, bytes]]:
    """Logged example grids as (caption, PNG bytes): the attack stage's adversarial examples
    beside their originals, then DeepFakes, then a segmentation overlay (latest runs first)."""
    found = []
    latest = sorted(runs, key=lambda r: r.start_time, reverse=True)
    for pattern in EXAMPLE_KINDS:
        kind = [(f"{run.stage} run {run.run_id[:8]}: {name}", Path(path))
                for run in latest for name, path in sorted(run.artifacts.items())
                if re.fullmatch(pattern, name) and Path(path).is_file()]
        found += [(caption, path.read_bytes()) for caption, path in kind[:1]]
    return found


def finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)
