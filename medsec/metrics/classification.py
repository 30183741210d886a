"""Classification metrics from logits: accuracy, AUC, F1, per-class recall, confusion; and
the multi-label variants (several findings per image, multi-hot labels (N, L))."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import (
    confusion_matrix,
    f1_score,
    multilabel_confusion_matrix,
    roc_auc_score,
)


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

    ``logits``: (N, K) float; ``labels``: (N,) int in [0, K). Multi-hot ``labels`` (N, K)
    in {0, 1} give :func:`multilabel_metrics` instead.
    """
    if np.ndim(labels) == 2:
        return multilabel_metrics(logits, labels, prefix)
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


def multilabel_metrics(logits: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor,
                       prefix: str = "") -> dict[str, float]:
    """Multi-label metrics of ``logits`` (N, L) (one sigmoid per finding) against multi-hot
    ``labels`` (N, L) in {0, 1}; a finding is predicted when its probability is >= 0.5.

    ``{prefix}auc``: macro ROC AUC, the mean of the per-finding AUCs
    ``{prefix}auc_label_{k}`` over the findings with both values present (NaN when none has;
    equals sklearn's ``roc_auc_score(average="macro")`` when all have);
    ``{prefix}acc``: macro accuracy (mean over findings of the per-finding accuracy);
    ``{prefix}exact_match``: fraction of images with every finding right;
    ``{prefix}f1``: macro F1; ``{prefix}loss``: mean binary cross-entropy over N x L.
    """
    z = np.asarray(torch.as_tensor(logits, dtype=torch.float64))
    y = np.asarray(torch.as_tensor(labels, dtype=torch.float64)).astype(np.int64)
    probs = 1.0 / (1.0 + np.exp(-z))
    preds = (probs >= 0.5).astype(np.int64)
    bce = np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))  # stable BCE-with-logits
    out: dict[str, float] = {}
    aucs = []
    for k in range(y.shape[1]):
        auc = (float(roc_auc_score(y[:, k], probs[:, k])) if len(np.unique(y[:, k])) == 2
               else float("nan"))
        out[f"{prefix}auc_label_{k}"] = auc
        aucs.append(auc)
    present = [a for a in aucs if not np.isnan(a)]
    return out | {
        f"{prefix}acc": float((preds == y).mean(axis=0).mean()),
        f"{prefix}auc": float(np.mean(present)) if present else float("nan"),
        f"{prefix}exact_match": float((preds == y).all(axis=1).mean()),
        f"{prefix}f1": float(f1_score(y, preds, average="macro", zero_division=0)),
        f"{prefix}loss": float(bce.mean()),
    }


def confusion(
    logits: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, num_classes: int
) -> np.ndarray:
    """Confusion matrix (K, K): rows true class, columns predicted class. Multi-hot
    ``labels`` (N, L): one 2 x 2 matrix per finding, (L, 2, 2) (threshold 0.5 on the
    sigmoid, i.e. logit >= 0)."""
    if np.ndim(labels) == 2:
        preds = (np.asarray(torch.as_tensor(logits)) >= 0).astype(np.int64)
        return multilabel_confusion_matrix(np.asarray(labels).astype(np.int64), preds)
    preds = np.asarray(torch.as_tensor(logits).argmax(dim=1))
    return confusion_matrix(np.asarray(labels), preds, labels=list(range(num_classes)))
