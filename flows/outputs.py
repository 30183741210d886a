"""Where stage outputs go (relative to the working directory = the repo root for DVC), and the
one writer of robustness curves (CSV for ``dvc plots``, PNG)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING

from medsec.io import write_atomic, write_text
from medsec.stages.pipeline import PREPARED_DIR

if TYPE_CHECKING:
    from matplotlib.figure import Figure

REPORTS = Path("reports")
METRICS = Path("metrics")
MODELS = Path("models")
PLOTS = Path("plots")
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
