"""Oracle: the documented PneumoniaMNIST preset beats the published MedMNIST v2 baseline.

MedMNIST v2 (Yang et al. 2023), ResNet-18 at 28x28: test ACC 0.854, AUC 0.944.
"""

from __future__ import annotations

import pytest

from medsec.config import load_config
from medsec.data.registry import load_dataset
from medsec.stages.classifier import train as train_classifier
from medsec.training.job import evaluate_classifier

pytestmark = pytest.mark.integration


def test_pneumoniamnist_preset_reaches_published_baseline(pneumonia_path):
    cfg = load_config(preset="pneumoniamnist",
                      overrides=[f"dataset.data_dir={pneumonia_path.parent}"])
    data = load_dataset(cfg.dataset.name, cfg.dataset.data_dir)
    trained = train_classifier(cfg, data)
    metrics = evaluate_classifier(trained.model, data.splits["test"], data.num_classes).metrics
    print(f"PneumoniaMNIST test metrics: {metrics}")
    assert metrics["test_acc"] >= 0.854, metrics
    assert metrics["test_auc"] >= 0.944, metrics
