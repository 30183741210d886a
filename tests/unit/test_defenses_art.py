"""Cross-checks against ART 1.20 (reference implementations) on the same tiny data.

- Preprocessors: our bit depth and median filter equal ART's FeatureSqueezing and
  SpatialSmoothing pixel for pixel; our JPEG equals ART's JpegCompression on 8-bit inputs
  (ART truncates other inputs to 8 bits, we round them).
- BPDA: ART's PGD on a classifier with a numpy preprocessor differentiates through the
  identity (BPDA), like our ``Preprocessed(..., bpda=True)``. With the same deterministic PGD
  (no random start, final iterate) robust accuracies agree within 5 points (JPEG inputs
  differ by the rounding above).
- PGD adversarial training: ours (batch transform in the one Lightning loop) and ART's
  AdversarialTrainerMadryPGD with the same network, initialisation, data, epochs, optimiser
  and PGD settings; random starts and batch orders differ, so PGD robust accuracies of the two
  models agree within 10 points (and both beat the undefended model).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from medsec.attacks import PGD
from medsec.defenses.transforms import JPEG, BitDepth, MedianFilter, Preprocessed
from tests.unit.attack_fixtures import (  # noqa: F401
    TinyCNN,
    accuracy,
    make_dataset,
    single_thread,
    trained_model,
)
from tests.unit.defense_fixtures import EPS, tiny_data, tiny_model

art_classification = pytest.importorskip("art.estimators.classification")
art_evasion = pytest.importorskip("art.attacks.evasion")
art_pre = pytest.importorskip("art.defences.preprocessor")
art_trainer = pytest.importorskip("art.defences.trainer")

STEPS, ALPHA = 10, EPS / 4


class _Float32(torch.nn.Module):
    """ART's FeatureSqueezing hands float64 arrays to the model: cast them back."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.float())


def _classifier(model, preprocessors=(), optimizer=None):
    return art_classification.PyTorchClassifier(
        model=_Float32(model), loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 28, 28),
        nb_classes=3, clip_values=(0.0, 1.0), optimizer=optimizer,
        preprocessing_defences=list(preprocessors) or None,
    )


CASES = {
    "bit_depth": (lambda: BitDepth(3),
                  lambda: art_pre.FeatureSqueezing(clip_values=(0.0, 1.0), bit_depth=3)),
    "jpeg": (lambda: JPEG(50),
             lambda: art_pre.JpegCompression(clip_values=(0.0, 1.0), quality=50,
                                             channels_first=True)),
    "median": (lambda: MedianFilter(3),
               lambda: art_pre.SpatialSmoothing(window_size=3, channels_first=True)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_preprocessors_and_bpda_pgd_match_art(name: str) -> None:
    model, x, y = trained_model(3)
    ours_t, art_t = CASES[name][0](), CASES[name][1]()
    grid = torch.round(x * 255) / 255  # 8-bit inputs: every implementation sees the same
    ours_out = ours_t(grid).numpy()
    art_out, _ = art_t(grid.numpy())
    assert np.abs(ours_out - art_out).max() <= 1e-6

    defended = Preprocessed(model, ours_t)
    ours_adv = PGD(defended.with_bpda(), eps=EPS, alpha=ALPHA, steps=STEPS, random_start=False,
                   early_stop=False)(x, y)
    clf = _classifier(copy.deepcopy(model), [art_t])
    art_adv = art_evasion.ProjectedGradientDescent(
        clf, eps=EPS, eps_step=ALPHA, max_iter=STEPS, num_random_init=0, batch_size=64,
        verbose=False).generate(x.numpy(), y.numpy())
    ours_acc = accuracy(defended, ours_adv, y)
    art_acc = accuracy(defended, torch.from_numpy(art_adv).float(), y)
    assert abs(ours_acc - art_acc) <= 0.05, (name, ours_acc, art_acc)
    assert ours_acc < accuracy(defended, x, y)  # BPDA does attack the transform


def test_pgd_adversarial_training_matches_art_madry() -> None:
    x_test, y_test = tiny_data(128, seed=200)
    ours = tiny_model("pgd_at")  # 300 blobs, 5 epochs, batch 50, Adam 3e-3, PGD-3 eps/3
    torch.manual_seed(0)
    net = TinyCNN(3)  # the same initialisation as the fixture's
    clf = _classifier(net, optimizer=torch.optim.Adam(net.parameters(), lr=3e-3))
    x_train, y_train = make_dataset(300, 3, seed=100)
    trainer = art_trainer.AdversarialTrainerMadryPGD(
        clf, nb_epochs=5, batch_size=50, eps=EPS, eps_step=EPS / 3, max_iter=3)
    trainer.fit(x_train.numpy(), y_train.numpy())
    art_model = net.eval()

    def pgd_acc(model):
        return accuracy(model, PGD(model, eps=EPS, alpha=ALPHA, steps=STEPS)(x_test, y_test),
                        y_test)

    ours_acc, art_acc = pgd_acc(ours), pgd_acc(art_model)
    plain_acc = pgd_acc(tiny_model("plain"))
    assert abs(ours_acc - art_acc) <= 0.10, (ours_acc, art_acc)
    assert min(ours_acc, art_acc) >= plain_acc + 0.2, (plain_acc, ours_acc, art_acc)
