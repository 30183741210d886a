"""Differential tests against ART 1.20 on the same model and inputs.

Tolerances:
- FGSM and PGD without random start (and ``early_stop=False``: ART returns final iterates)
  are the same deterministic algorithm: robust accuracy within 1 percentage point (with 64
  images: identical), adversarial pixels nearly all equal. With early stopping our robust
  accuracy can only be lower.
- PGD with random start: the random starts differ (torch generator vs numpy), so compare the
  mean robust accuracy over 3 seeds of each; on this model the seed-to-seed spread is at most
  one or two images (1.6-3.1 points), so means must agree within 3.2 points.
- CW-L2 and DeepFool are minimal-norm attacks whose implementations differ (Adam in tanh
  space vs ART's line search; overshoot applied per step vs at the end): both must fool every
  example, and the median L2 norms agree within 25 %.
- UAP (DeepFool-based, the same sequential algorithm): fooling rates within 0.2 of each
  other; our batched SGD variant must be at least as strong as ART's.
"""

from __future__ import annotations

import copy
import random

import numpy as np
import pytest
import torch

from medsec.attacks import CWL2, FGSM, PGD, UAP, DeepFool
from tests.unit.attack_fixtures import accuracy, single_thread, trained_model  # noqa: F401

art_classification = pytest.importorskip("art.estimators.classification")
art_evasion = pytest.importorskip("art.attacks.evasion")

EPS = 8 / 255


@pytest.fixture(scope="module")
def setup():
    model, x, y = trained_model(3)
    classifier = art_classification.PyTorchClassifier(
        model=copy.deepcopy(model),  # ART changes modes and fills .grad: give it its own copy
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=(1, 28, 28),
        nb_classes=3,
        clip_values=(0.0, 1.0),
    )
    return model, classifier, x, y


def _art_acc(classifier, adv: np.ndarray, y: torch.Tensor) -> float:
    return float((classifier.predict(adv).argmax(1) == y.numpy()).mean())


def _l2(adv: np.ndarray | torch.Tensor, x: torch.Tensor) -> np.ndarray:
    return np.linalg.norm((np.asarray(adv) - x.numpy()).reshape(len(x), -1), axis=1)


def test_fgsm_matches_art(setup) -> None:
    model, clf, x, y = setup
    art_adv = art_evasion.FastGradientMethod(clf, eps=EPS, batch_size=64).generate(
        x.numpy(), y.numpy()
    )
    ours = FGSM(model, eps=EPS)(x, y)
    assert abs(_art_acc(clf, art_adv, y) - accuracy(model, ours, y)) <= 0.01
    assert np.mean(np.abs(art_adv - ours.numpy()) < 1e-6) > 0.999


def test_pgd_without_random_start_matches_art(setup) -> None:
    model, clf, x, y = setup
    art_adv = art_evasion.ProjectedGradientDescent(
        clf,
        eps=EPS,
        eps_step=2 / 255,
        max_iter=10,
        num_random_init=0,
        batch_size=64,
        verbose=False,
    ).generate(x.numpy(), y.numpy())
    ours = PGD(model, eps=EPS, alpha=2 / 255, steps=10, random_start=False, early_stop=False)
    adv = ours(x, y)
    assert abs(_art_acc(clf, art_adv, y) - accuracy(model, adv, y)) <= 0.01
    assert np.mean(np.abs(art_adv - adv.numpy()) < 1e-5) > 0.99
    # early stopping (the default) freezes examples once fooled: never weaker than ART
    early = PGD(model, eps=EPS, alpha=2 / 255, steps=10, random_start=False)
    assert accuracy(model, early(x, y), y) <= _art_acc(clf, art_adv, y)
    assert early.last_stats is not None and ours.last_stats is not None
    assert early.last_stats.queries.sum() < ours.last_stats.queries.sum()


def test_pgd_with_random_start_matches_art_on_average(setup) -> None:
    model, clf, x, y = setup
    eps = 6 / 255
    art_accs, our_accs = [], []
    for seed in range(3):
        np.random.seed(seed)
        art = art_evasion.ProjectedGradientDescent(
            clf,
            eps=eps,
            eps_step=eps / 4,
            max_iter=10,
            num_random_init=1,
            batch_size=64,
            verbose=False,
        )
        art_accs.append(_art_acc(clf, art.generate(x.numpy(), y.numpy()), y))
        ours = PGD(model, eps=eps, alpha=eps / 4, seed=seed, early_stop=False)
        our_accs.append(accuracy(model, ours(x, y), y))
    assert abs(np.mean(art_accs) - np.mean(our_accs)) <= 2 / 64 + 1e-9


def test_deepfool_comparable_to_art(setup) -> None:
    model, clf, x, y = setup
    x, y = x[:32], y[:32]
    art_adv = art_evasion.DeepFool(
        clf, max_iter=50, epsilon=0.02, nb_grads=10, batch_size=32, verbose=False
    ).generate(x.numpy())
    ours = DeepFool(model, steps=50, overshoot=0.02)(x, y)
    assert _art_acc(clf, art_adv, y) == 0.0 and accuracy(model, ours, y) == 0.0
    ratio = np.median(_l2(ours.detach(), x)) / np.median(_l2(art_adv, x))
    assert 0.8 <= ratio <= 1.25, ratio


def test_cw_comparable_to_art(setup) -> None:
    model, clf, x, y = setup
    x, y = x[:16], y[:16]
    art_adv = art_evasion.CarliniL2Method(
        clf,
        confidence=0.0,
        learning_rate=0.01,
        binary_search_steps=3,
        max_iter=10,
        initial_const=0.1,
        batch_size=16,
        verbose=False,
    ).generate(x.numpy(), y.numpy())
    ours = CWL2(model, c=0.1, steps=30, binary_search_steps=3, lr=0.01)(x, y)
    art_ok = clf.predict(art_adv).argmax(1) != y.numpy()
    our_ok = (model(ours).argmax(1) != y).numpy()
    assert our_ok.mean() >= art_ok.mean() - 1 / 16
    ratio = np.median(_l2(ours.detach(), x)[our_ok]) / np.median(_l2(art_adv, x)[art_ok])
    assert 0.75 <= ratio <= 1.25, ratio


def test_uap_fooling_rate_in_art_range(setup) -> None:
    model, clf, x, y = setup
    x, y = x[:32], y[:32]
    eps = 16 / 255
    random.seed(0)
    art = art_evasion.UniversalPerturbation(
        clf,
        attacker="deepfool",
        attacker_params={"epsilon": 0.02, "max_iter": 20, "verbose": False},
        delta=0.2,
        max_iter=2,
        eps=eps,
        norm=np.inf,
        batch_size=32,
        verbose=False,
    )
    art.generate(x.numpy())  # y=None: fooling rate w.r.t. predictions, like ours
    ours_df = UAP(model, eps=eps, method="deepfool", epochs=2, batch_size=1, deepfool_steps=20).fit(
        x, y
    )
    ours_sgd = UAP(model, eps=eps, method="pgd", epochs=2, batch_size=8).fit(x, y)
    assert ours_df.fooling_rate is not None and ours_sgd.fooling_rate is not None
    assert abs(ours_df.fooling_rate - art.fooling_rate) <= 0.2
    assert ours_sgd.fooling_rate >= art.fooling_rate
