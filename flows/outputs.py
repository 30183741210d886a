"""Where stage outputs go, and the one writer of robustness curves (CSV for ``dvc plots``, PNG).

The paths below are relative to an output root: ``"."`` (the repo root) for the DVC stages
(``medsec stage X``), a fresh :func:`new_run_dir` for ``medsec run``, so a benchmark run never
writes the DVC outputs and two runs never share a file. ``at(root, PATH)`` places one.
"""

from __future__ import annotations

import csv
import io
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from medsec.io import write_atomic, write_json, write_text
from medsec.stages.pipeline import PREPARED_DIR, headline_metrics, stage_of_metrics

if TYPE_CHECKING:
    from matplotlib.figure import Figure

REPORTS = Path("reports")
METRICS = Path("metrics")
MODELS = Path("models")
PLOTS = Path("plots")
RUNS = Path("runs")  # git-ignored: one folder per `medsec run`
PREPARED = Path(PREPARED_DIR)  # the data stage's output: the dataset every later stage reads

VALIDATION_REPORT_DIR = REPORTS / "validation"
VALIDATION_METRICS = METRICS / "validation.json"
CLASSIFIER_CKPT = MODELS / "classifier.pt"
CLASSIFIER_INFO = MODELS / "classifier.json"
TRAIN_METRICS = METRICS / "train.json"
TRAIN_HISTORY = PLOTS / "train_history.csv"
EVALUATE_METRICS = METRICS / "evaluate.json"
CONFUSION_PNG = PLOTS / "confusion.png"
SAMPLES_PNG = PLOTS / "samples.png"


def at(root: str | Path, path: str | Path) -> Path:
    """``path`` (one of the layout paths above) under the output root ``root``."""
    return Path(root) / path


def new_run_dir(parent: str | Path = RUNS) -> Path:
    """A new, empty ``runs/<UTC timestamp>-<pid>-<4 hex>/`` (unique across processes)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = Path(parent) / f"{stamp}-{os.getpid()}-{uuid.uuid4().hex[:4]}"
    path.mkdir(parents=True)
    return path


def write_metrics(path: str | Path, metrics: dict) -> Path:
    """The one writer of stage metrics files (``<root>/metrics/<name>.json``): DVC sees only
    the stage's declared headline keys there (``Stage.headline`` in the stage table); the full
    metrics go to ``<root>/reports/scorecards/<name>.json`` (a plain output). Both atomic."""
    path = Path(path)
    stage = stage_of_metrics(path)
    if stage is not None and stage.scorecard:
        write_json(path.parent.parent / stage.scorecard, metrics)
        metrics = headline_metrics(stage, metrics)
    return write_json(path, metrics)


def write_curve(rows: list[dict], value: str, csv_path: Path, png_path: Path,
                figure: Figure) -> None:
    """Rows ``{attack, eps, <value>, norm}`` to ``csv_path`` (eps and value with 6 decimals)
    and ``figure`` to ``png_path``, both atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["attack", "eps", value, "norm"],
                            lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({"attack": row["attack"], "eps": f"{row['eps']:.6f}",
                         value: f"{row[value]:.6f}", "norm": row.get("norm", "linf")})
    write_text(csv_path, buffer.getvalue())
    write_atomic(png_path, lambda tmp: figure.savefig(tmp, format="png", dpi=100))
