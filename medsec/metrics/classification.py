"""Classification metrics from logits: accuracy, AUC, F1, per-class recall, confusion."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import confusion_matrix, f1_score, roc_auc_score


def softmax_np(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def auc_score(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """Binary: ROC AUC of class 1; multi-class: macro one-vs-rest. NaN if one class only."""
    present = np.unique(labels)
    if len(present) < 2:
        return float("nan")
    if num_classes == 2:
        return float(roc_auc_score(labels, probs[:, 1]))
    if len(present) < num_classes:
        return float(np.mean([roc_auc_score(labels == c, probs[:, c]) for c in present]))
    return float(roc_auc_score(labels, probs, multi_class="ovr", average="macro"))


def classification_metrics(logits: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor,
                           num_classes: int, prefix: str = "") -> dict[str, float]:
    """Scalar metrics named ``{prefix}acc``, ``{prefix}auc``, ``{prefix}f1`` (macro),
    ``{prefix}recall_class_{k}`` and ``{prefix}loss`` (mean cross-entropy).

    ``logits``: (N, K) float; ``labels``: (N,) int in [0, K).
    """
    logits = np.asarray(torch.as_tensor(logits, dtype=torch.float64))
    labels = np.asarray(torch.as_tensor(labels)).astype(np.int64)
    probs = softmax_np(logits)
    preds = probs.argmax(axis=1)
    nll = -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0))
    cm = confusion_matrix(labels, preds, labels=list(range(num_classes)))
    out = {
        f"{prefix}acc": float((preds == labels).mean()),
        f"{prefix}auc": auc_score(probs, labels, num_classes),
        f"{prefix}f1": float(f1_score(labels, preds, average="macro", zero_division=0)),
        f"{prefix}loss": float(nll.mean()),
    }
    for k in range(num_classes):
        support = cm[k].sum()
        out[f"{prefix}recall_class_{k}"] = float(cm[k, k] / support) if support else float("nan")
    return out


def confusion(
    logits: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, num_classes: int
) -> np.ndarray:
    """Confusion matrix (K, K): rows true class, columns predicted class."""
    preds = np.asarray(torch.as_tensor(logits).argmax(dim=1))
    return confusion_matrix(np.asarray(labels), preds, labels=list(range(num_classes)))
