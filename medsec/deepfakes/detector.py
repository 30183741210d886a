"""Detectors of DeepFakes: real (0) vs fake (1) classifiers and their AUROC.

A detector is the project's classifier trained on real images and fakes (or tampered
images); it is evaluated on held-out real images against held-out fakes, including fakes of
a generator it never saw in training.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import Tensor, nn

from medsec.data.types import ImageDataset
from medsec.deepfakes.classify import fit_on
from medsec.training.config import ClassifierRecipe
from medsec.training.predict import predict_logits

DETECTOR_CLASSES = ["real", "fake"]


def detection_split(real: Tensor | np.ndarray, fake: Tensor | np.ndarray, seed: int
                    ) -> ImageDataset:
    """Real (label 0) and fake (label 1) images (N, C, H, W) in [0, 1], shuffled with ``seed``."""
    real_np = np.asarray(real, dtype=np.float32)
    fake_np = np.asarray(fake, dtype=np.float32)
    if real_np.shape[1:] != fake_np.shape[1:]:
        raise ValueError(f"real images {real_np.shape[1:]} and fakes {fake_np.shape[1:]} differ "
                         "in shape")
    images = np.concatenate([real_np, fake_np])
    labels = np.r_[np.zeros(len(real_np)), np.ones(len(fake_np))].astype(np.int64)
    order = np.random.RandomState(seed).permutation(len(labels))
    return ImageDataset(np.ascontiguousarray(images[order]), labels[order])


def train_detector(recipe: ClassifierRecipe, train: ImageDataset, val: ImageDataset,
                   epochs: int, seed: int, name: str = "deepfake-detection") -> nn.Module:
    """Fit ``recipe``'s classifier on a real-vs-fake split (see :func:`detection_split`)."""
    return fit_on(recipe, train, val, DETECTOR_CLASSES, name, epochs=epochs, seed=seed)


def fake_scores(detector: nn.Module, images: Tensor | np.ndarray) -> np.ndarray:
    """P(fake) (N,) for images (N, C, H, W) in [0, 1]."""
    logits = predict_logits(detector, torch.as_tensor(np.asarray(images, dtype=np.float32)))
    return torch.softmax(logits.double(), dim=1)[:, 1].numpy()


def detection_auc(detector: nn.Module, real: Tensor | np.ndarray,
                  fake: Tensor | np.ndarray) -> float:
    """AUROC of P(fake) separating ``fake`` (positives) from ``real`` (0.5 = chance)."""
    scores = np.r_[fake_scores(detector, real), fake_scores(detector, fake)]
    truth = np.r_[np.zeros(len(real)), np.ones(len(fake))]
    return float(roc_auc_score(truth, scores))
