"""Shared, cached fixtures for the attack tests: a synthetic dataset and tiny trained CNNs.

Plain functions cached per process (``functools.cache``) so every attack test module reuses
the same trained model; training takes about a second on one core.
"""

from __future__ import annotations

import copy
from functools import cache

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

IMAGE_SIZE = 28


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Run a test module on one intra-op thread (tiny models on a shared 2-core machine run
    several times faster that way); the previous setting is restored afterwards.

    Import it into a test module to activate it there.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


_CENTRES = ((7, 7), (20, 20), (7, 20), (20, 7))


class TinyCNN(nn.Module):
    """Normalisation inside, then two conv blocks and a linear head; input (N,1,28,28) in [0,1]."""

    def __init__(self, num_classes: int = 3, width: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(2 * width * 7 * 7, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = (x - 0.5) / 0.25
        return self.head(self.features(x).flatten(1))


class ProbabilityModel(nn.Module):
    """Wraps a classifier and (wrongly, for attacks) returns softmax probabilities."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x).softmax(dim=1)


class SegmentationModel(nn.Module):
    """A dense model returning (N, K, H, W) logits: not a classifier."""

    def __init__(self, num_classes: int = 2) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, num_classes, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


def make_dataset(n: int, num_classes: int = 3, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Separable blobs: class k has a faint bright square near centre k on a noisy background.

    Returns images (n, 1, 28, 28) float32 in [0, 1] and labels (n,) int64.
    """
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % num_classes
    labels = labels[torch.randperm(n, generator=g)]
    noise = torch.rand(n, 1, IMAGE_SIZE, IMAGE_SIZE, generator=g)
    images = 0.35 + 0.3 * F.avg_pool2d(noise, 3, stride=1, padding=1)
    contrast = 0.05 + 0.1 * torch.rand(n, generator=g)
    for k in range(num_classes):
        r, c = _CENTRES[k]
        idx = labels == k
        images[idx, :, r - 4 : r + 4, c - 4 : c + 4] += contrast[idx].view(-1, 1, 1, 1)
    return images.clamp(0, 1).float(), labels.long()


@cache
def _trained(num_classes: int, seed: int) -> tuple[TinyCNN, Tensor, Tensor]:
    torch.manual_seed(seed)
    x_train, y_train = make_dataset(600, num_classes, seed=seed + 100)
    x_test, y_test = make_dataset(64, num_classes, seed=seed + 200)
    model = TinyCNN(num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(6):
        perm = torch.randperm(x_train.shape[0])
        for i in range(0, x_train.shape[0], 50):
            idx = perm[i : i + 50]
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return model, x_test, y_test


def trained_model(num_classes: int = 3, seed: int = 0) -> tuple[TinyCNN, Tensor, Tensor]:
    """A tiny CNN trained on the synthetic data (a private copy) plus 64 test images/labels."""
    model, x, y = _trained(num_classes, seed)
    return copy.deepcopy(model), x.clone(), y.clone()


def accuracy(model: nn.Module, images: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy in eval mode."""
    with torch.no_grad():
        return float((model(images).argmax(1) == labels).float().mean())
