"""Model extraction and class-representative model inversion on synthetic blob images."""

from __future__ import annotations

from functools import cache

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medsec.privacy.extraction import extract_model, victim_api
from medsec.privacy.inversion import (
    class_representative_inversion,
    inversion_metrics,
    invert_class,
    total_variation,
)
from medsec.privacy.plain_train import make_train_fn

pytestmark = pytest.mark.usefixtures("one_thread")



_CENTRES = ((7, 7), (20, 20), (7, 20), (20, 7))


def blobs(n: int, num_classes: int, contrast: float, seed: int) -> tuple[Tensor, Tensor]:
    """Class k: a bright 8x8 square near centre k on smooth noise; (n,1,28,28) in [0,1]."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    images = 0.3 + 0.2 * F.avg_pool2d(torch.rand(n, 1, 28, 28, generator=g), 3, 1, 1)
    for k in range(num_classes):
        r, c = _CENTRES[k]
        images[labels == k, :, r - 4 : r + 4, c - 4 : c + 4] += contrast
    return images.clamp(0, 1), labels


class SmallCNN(nn.Module):
    """Two conv + GroupNorm blocks and a linear head; (N,1,28,28) in [0,1] -> logits (N,K)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.GroupNorm(2, 8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.GroupNorm(4, 16),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(16 * 7 * 7, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features((x - 0.5) / 0.25).flatten(1))


def _train_fn(num_classes: int):
    return make_train_fn(lambda: SmallCNN(num_classes), epochs=5, lr=3e-3, batch_size=32)


@cache
def _victim(num_classes: int, contrast: float) -> tuple[nn.Module, Tensor, Tensor]:
    images, labels = blobs(256, num_classes, contrast, seed=0)
    return _train_fn(num_classes)(images, labels, 0), images, labels


# --------------------------------------------------------------------------- extraction


@pytest.mark.parametrize("mode", ["probs", "labels"])
def test_extraction_agreement_rises_with_budget(mode):
    victim, _, _ = _victim(4, 0.06)
    test_images, test_labels = blobs(200, 4, 0.06, seed=1)
    pool, _ = blobs(512, 4, 0.06, seed=2)  # attacker's unlabeled images
    results = extract_model(
        victim_api(victim, "probs"),
        pool,
        _train_fn(4),
        [8, 64, 512],
        test_images,
        test_labels,
        mode=mode,
    )
    agreement = [r.agreement for r in results]
    assert [r.budget for r in results] == [8, 64, 512]
    assert agreement[0] < agreement[1] < agreement[2]
    assert agreement[2] > 0.8  # chance is ~0.25
    assert results[0].victim_test_acc > 0.9
    assert set(results[0].metrics()) >= {"extraction_agreement", "extraction_test_acc"}


def test_label_only_api_and_bad_budgets():
    victim, _, _ = _victim(4, 0.06)
    api = victim_api(victim, "labels")
    pool, _ = blobs(16, 4, 0.06, seed=3)
    assert api(pool).shape == (16,)
    with pytest.raises(ValueError, match="needs an API that returns"):
        extract_model(api, pool, _train_fn(4), [8], pool, torch.zeros(16, dtype=torch.long))
    with pytest.raises(ValueError, match="budgets"):
        extract_model(
            api, pool, _train_fn(4), [32], pool, torch.zeros(16, dtype=torch.long), mode="labels"
        )


# --------------------------------------------------------------------------- inversion


def test_inversion_is_closer_to_its_own_class_average():
    victim, images, labels = _victim(2, 0.3)
    before = [p.clone() for p in victim.parameters()]
    results = class_representative_inversion(victim, images, labels, 2, steps=200)
    for r in results:
        assert r.reconstruction.shape == (1, 28, 28)
        assert 0.0 <= float(r.reconstruction.min()) and float(r.reconstruction.max()) <= 1.0
        assert r.closer_to_own, r
    metrics = inversion_metrics(results)
    assert metrics["inversion_closer_to_own_rate"] == 1.0
    assert metrics["inversion_corr_own"] > metrics["inversion_corr_other"] + 0.1
    assert all(torch.equal(a, b) for a, b in zip(before, victim.parameters(), strict=True))


def test_tv_regularisation_smooths_the_reconstruction():
    victim, _, _ = _victim(2, 0.3)
    rough = invert_class(victim, 1, (1, 28, 28), steps=100, tv_weight=0.0)
    smooth = invert_class(victim, 1, (1, 28, 28), steps=100, tv_weight=1.0)
    assert total_variation(smooth[None]) < total_variation(rough[None])
