"""Real-vs-fake detection with the project's training loop."""

from __future__ import annotations

import numpy as np
import pytest

from medsec.config import load_config
from medsec.deepfakes.detector import detection_auc, detection_split, train_detector
from medsec.stages.deepfake import recipe
from tests.unit.deepfake_fixtures import blob_dataset, single_thread  # noqa: F401


def _easy_fakes(images: np.ndarray, seed: int) -> np.ndarray:
    """'Fakes' with a tell-tale checkerboard (as transposed convolutions leave)."""
    board = (np.indices(images.shape[2:]).sum(0) % 2).astype(np.float32)
    noise = 0.02 * np.random.RandomState(seed).randn(*images.shape)
    return np.clip(images + 0.15 * board + noise, 0, 1).astype(np.float32)


def test_detector_beats_chance_on_easy_fakes():
    cfg = recipe(load_config(preset="tiny", overrides=["train.epochs=3", "train.batch_size=16"]))
    real_train, real_val, real_test = (blob_dataset(48, seed=s) for s in (0, 1, 2))
    train = detection_split(real_train.images, _easy_fakes(real_train.images, 0), seed=0)
    val = detection_split(real_val.images, _easy_fakes(real_val.images, 1), seed=0)
    assert len(train) == 96 and train.labels.sum() == 48
    detector = train_detector(cfg, train, val, epochs=3, seed=0)
    auc = detection_auc(detector, real_test.images, _easy_fakes(real_test.images, 2))
    assert auc > 0.8


def test_detection_split_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="differ in shape"):
        detection_split(np.zeros((2, 1, 16, 16)), np.zeros((2, 1, 8, 8)), seed=0)
