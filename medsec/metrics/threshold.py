"""Operating point chosen on validation data: sensitivity and specificity at that threshold."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_curve


def youden_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The score threshold maximising Youden's J = TPR - FPR on (``scores`` (N,) of the
    positive class, ``labels`` (N,) in {0, 1}); positives are ``score >= threshold``.
    ValueError when one class is missing."""
    labels = np.asarray(labels).astype(int)
    if len(np.unique(labels)) < 2:
        raise ValueError("a threshold needs both classes in the validation labels")
    fpr, tpr, thresholds = roc_curve(labels, scores)
    best = int(np.argmax(tpr - fpr))
    return float(min(thresholds[best], 1.0))


def sens_spec(scores: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[float, float]:
    """(sensitivity, specificity) in [0, 1] of ``scores >= threshold`` (NaN for a missing
    class)."""
    labels = np.asarray(labels).astype(int)
    pred = np.asarray(scores) >= threshold
    pos, neg = labels == 1, labels == 0
    sens = float(pred[pos].mean()) if pos.any() else float("nan")
    spec = float((~pred[neg]).mean()) if neg.any() else float("nan")
    return sens, spec


def operating_point(val_scores: np.ndarray, val_labels: np.ndarray, test_scores: np.ndarray,
                    test_labels: np.ndarray) -> dict[str, float]:
    """``val_threshold`` (Youden on validation) and ``test_sensitivity``/``test_specificity``
    at it; scores are the positive-class (class 1) probabilities."""
    threshold = youden_threshold(val_scores, val_labels)
    sens, spec = sens_spec(test_scores, test_labels, threshold)
    return {"val_threshold": threshold, "test_sensitivity": sens, "test_specificity": spec}
