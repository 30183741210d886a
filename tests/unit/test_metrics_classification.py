import numpy as np
from sklearn.metrics import roc_auc_score

from medsec.metrics.classification import classification_metrics, confusion


def test_binary_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    logits = rng.normal(size=(200, 2)) + np.eye(2)[labels] * 1.5
    m = classification_metrics(logits, labels, 2, prefix="test_")
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert abs(m["test_auc"] - roc_auc_score(labels, probs[:, 1])) < 1e-12
    assert m["test_acc"] == (logits.argmax(1) == labels).mean()
    cm = confusion(logits, labels, 2)
    assert m["test_recall_class_1"] == cm[1, 1] / cm[1].sum()


def test_multiclass_auc_is_one_vs_rest_macro():
    labels = np.array([0, 1, 2, 0, 1, 2])
    logits = np.eye(3)[labels] * 5.0
    m = classification_metrics(logits, labels, 3)
    assert m["acc"] == 1.0 and m["auc"] == 1.0 and m["f1"] == 1.0
