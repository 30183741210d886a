"""Where stage outputs go (relative to the working directory = the repo root for DVC)."""

from pathlib import Path

REPORTS = Path("reports")
METRICS = Path("metrics")
MODELS = Path("models")
PLOTS = Path("plots")

VALIDATION_REPORT_DIR = REPORTS / "validation"
VALIDATION_METRICS = METRICS / "validation.json"
CLASSIFIER_CKPT = MODELS / "classifier.pt"
CLASSIFIER_INFO = MODELS / "classifier.json"
TRAIN_METRICS = METRICS / "train.json"
TRAIN_HISTORY = PLOTS / "train_history.csv"
EVALUATE_METRICS = METRICS / "evaluate.json"
CONFUSION_PNG = PLOTS / "confusion.png"
SAMPLES_PNG = PLOTS / "samples.png"
