"""Shared, cached fixtures for the defense tests: tiny CNNs trained through the project's one
training loop (``ClassifierModule`` + ``fit_classifier``) on the attack tests' blob images.

Import ``single_thread`` into a test module to run it on one intra-op thread.
"""

from __future__ import annotations

import copy
from functools import cache

import torch
from torch import Tensor, nn

from medsec.data.types import ImageDataset
from medsec.defenses.config import DefenseEvalConfig
from medsec.defenses.training import AdversarialBatches, TradesLoss
from medsec.training.fit import fit_classifier, make_loader
from medsec.training.module import ClassifierModule
from tests.unit.attack_fixtures import TinyCNN, make_dataset, single_thread  # noqa: F401

EPS = 8 / 255
EVAL = DefenseEvalConfig(eps=EPS, steps=10, restarts=1, square_queries=100, max_examples=64,
                         eot_samples=4, predict_samples=8, radii=(0.1, 0.25, 0.5))


def _dataset(n: int, seed: int) -> ImageDataset:
    x, y = make_dataset(n, 3, seed=seed)
    return ImageDataset(x.numpy(), y.numpy())


@cache
def _fit(kind: str, epochs: int) -> nn.Module:
    hooks = {
        "plain": {},
        "pgd_at": {"batch_transform": AdversarialBatches(EPS, EPS / 3, 3)},
        "fast_fgsm_at": {"batch_transform": AdversarialBatches.fast_fgsm(EPS)},
        "trades": {"loss_fn": TradesLoss(EPS, EPS / 3, 3, beta=6.0)},
    }[kind]
    torch.manual_seed(0)
    module = ClassifierModule(TinyCNN(3), 3, lr=3e-3, **hooks)
    train = make_loader(_dataset(300, 100), 50, True, 0)
    val = make_loader(_dataset(96, 300), 96, False, 0)
    fit_classifier(module, train, val, epochs, seed=0, select_best=False)
    return module.net.eval()


def tiny_model(kind: str = "plain", epochs: int = 5) -> nn.Module:
    """A TinyCNN (3 classes, 28x28) trained ``epochs`` through the one loop with the
    defense hooks of ``kind`` (plain, pgd_at, fast_fgsm_at, trades); a private copy."""
    return copy.deepcopy(_fit(kind, epochs))


def tiny_data(n: int = 64, seed: int = 200) -> tuple[Tensor, Tensor]:
    """Blob test images (n, 1, 28, 28) in [0, 1] and labels (n,)."""
    return make_dataset(n, 3, seed=seed)
