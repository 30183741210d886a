"""Membership inference: strong on an overfit model, chance without members, agrees with ART.

The target is a tiny MLP memorising random-noise images with random labels (nothing to
generalise, so members and non-members differ only by memorisation). Members and
non-members come from the same distribution; every set is disjoint.
"""

from __future__ import annotations

import logging
from functools import cache

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from medsec.metrics.privacy import mia_metrics
from medsec.privacy.lira import (
    balanced_in_mask,
    lira_scores,
    rmia_scores,
    train_reference_models,
)
from medsec.privacy.membership import (
    ShadowModelAttack,
    logit_confidence,
    loss_threshold_scores,
    per_example_loss,
)
from medsec.privacy.plain_train import TrainFn, make_train_fn

pytestmark = pytest.mark.usefixtures("one_thread")



K = 4  # classes
N = 96  # members = non-members = N


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 64), nn.ReLU(), nn.Linear(64, K))


def _noise(n: int, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, K, (n,), generator=g)


def _train_fn(epochs: int) -> TrainFn:
    return make_train_fn(_mlp, epochs=epochs, lr=1e-3, batch_size=32)


@cache
def _setup(epochs: int) -> dict[str, tuple[Tensor, Tensor] | nn.Module]:
    """Target trained on ``members``; disjoint ``nonmembers``, ``unseen``, shadow pool."""
    sets = {
        name: _noise(n, seed)
        for name, n, seed in [
            ("members", N, 1),
            ("nonmembers", N, 2),
            ("unseen", N, 3),
            ("shadow", 2 * N, 4),
        ]
    }
    target = _train_fn(epochs)(*sets["members"], 0)
    return {**sets, "target": target}


def _audit(s: dict) -> tuple[Tensor, Tensor]:
    return (
        torch.cat([s["members"][0], s["nonmembers"][0]]),
        torch.cat([s["members"][1], s["nonmembers"][1]]),
    )


def _auc(scores: np.ndarray) -> float:
    return mia_metrics(scores[:N], scores[N:])["mia_auc"]


@pytest.fixture(autouse=True)
def _quiet_resolution_warnings(caplog):
    caplog.set_level(logging.ERROR, logger="medsec.metrics.privacy")


def test_logit_confidence_is_logit_of_true_class_probability():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0]])
    labels = torch.tensor([0, 2])
    p = torch.softmax(logits.double(), dim=1)[torch.arange(2), labels]
    np.testing.assert_allclose(logit_confidence(logits, labels), torch.log(p / (1 - p)).numpy())


def test_balanced_in_mask_puts_each_example_in_half_the_models():
    mask = balanced_in_mask(8, 50, seed=0)
    assert mask.shape == (8, 50) and (mask.sum(axis=0) == 4).all()
    with pytest.raises(ValueError, match="even"):
        balanced_in_mask(3, 5, seed=0)


def test_loss_threshold_separates_members_of_an_overfit_model():
    s = _setup(40)
    assert _auc(loss_threshold_scores(s["target"], *_audit(s))) > 0.95


def test_shadow_attack_separates_members():
    s = _setup(40)
    for features in ("sorted", "per_class"):
        attack = ShadowModelAttack(_train_fn(40), num_shadow=2, features=features)
        scores = attack.fit(*s["shadow"]).score(s["target"], *_audit(s))
        assert _auc(scores) > 0.9, features


def test_lira_and_rmia_separate_members():
    s = _setup(40)
    images, labels = _audit(s)
    refs = train_reference_models(images, labels, _train_fn(40), num_models=4, seed=1)
    assert _auc(lira_scores(s["target"], images, labels, refs, online=True)) > 0.9
    assert _auc(lira_scores(s["target"], images, labels, refs, online=False)) > 0.9
    population = s["shadow"]  # attacker data the target never saw
    assert _auc(rmia_scores(s["target"], images, labels, refs, *population)) > 0.9
    offline = rmia_scores(s["target"], images, labels, refs, *population, offline_a=0.3)
    assert _auc(offline) > 0.9


def test_no_members_means_chance_auc():
    # "Members" are in fact unseen too: every attack must sit near AUC 0.5. With 96 vs 96 the
    # null AUC has a standard deviation of ~0.042; 0.15 is over 3.5 standard deviations.
    s = _setup(40)
    images = torch.cat([s["unseen"][0], s["nonmembers"][0]])
    labels = torch.cat([s["unseen"][1], s["nonmembers"][1]])
    assert abs(_auc(loss_threshold_scores(s["target"], images, labels)) - 0.5) < 0.15
    refs = train_reference_models(images, labels, _train_fn(40), num_models=4, seed=2)
    assert abs(_auc(lira_scores(s["target"], images, labels, refs)) - 0.5) < 0.15


def test_unfitted_shadow_attack_refuses_to_score():
    s = _setup(40)
    with pytest.raises(RuntimeError, match="fit"):
        ShadowModelAttack(_train_fn(1)).score(s["target"], *s["members"])


# --------------------------------------------------------------------------- ART cross-check
# A moderately overfit target (12 epochs: AUC ~0.9, not saturated). ART's attacks are
# supervised: they learn from half of the members/non-members and are evaluated on the other
# half, where our (unsupervised) loss threshold and shadow attack are evaluated too.
# Tolerance: |AUC ours - AUC ART| <= 0.12 (48 vs 48 evaluation examples, AUC sd ~0.03-0.05;
# ART's attack also sees the labels and member examples, so it can learn non-monotone loss
# regions a single threshold cannot: expect it a little above ours).
ART_TOLERANCE = 0.12
NUM_SHADOW = 4


def _art_setup():
    from art.estimators.classification import PyTorchClassifier

    s = _setup(12)
    half = N // 2
    (mx, my), (nx, ny) = s["members"], s["nonmembers"]
    fit = (mx[:half], my[:half], nx[:half], ny[:half])
    evaluation = (torch.cat([mx[half:], nx[half:]]), torch.cat([my[half:], ny[half:]]))
    estimator = PyTorchClassifier(
        model=s["target"],
        loss=nn.CrossEntropyLoss(),
        input_shape=(1, 28, 28),
        nb_classes=K,
        clip_values=(0.0, 1.0),
    )
    return s, fit, evaluation, estimator


def _half_auc(scores: np.ndarray) -> float:
    half = len(scores) // 2
    return mia_metrics(scores[:half], scores[half:])["mia_auc"]


def test_per_example_loss_matches_art():
    s, _, (images, labels), estimator = _art_setup()
    art_loss = estimator.compute_loss(images.numpy(), np.eye(K)[labels.numpy()], reduction="none")
    np.testing.assert_allclose(
        per_example_loss(s["target"], images, labels), art_loss, rtol=1e-5, atol=1e-6
    )


def test_loss_and_shadow_attacks_agree_with_art():
    from art.attacks.inference.membership_inference import (
        MembershipInferenceBlackBox,
        ShadowModels,
    )
    from art.estimators.classification import PyTorchClassifier
    from scipy.special import softmax

    s, fit, (images, labels), estimator = _art_setup()
    x, y = images.numpy(), labels.numpy()

    # ART's random-forest attack model is unseeded (it draws from numpy's global RNG); passing
    # a seeded forest instead trips ART's `if self.attack_model` (len() of an unfitted forest).
    np.random.seed(0)
    art_loss = MembershipInferenceBlackBox(estimator, input_type="loss", attack_model_type="rf")
    art_loss.fit(*(t.numpy() for t in fit))
    art_loss_auc = _half_auc(art_loss.infer(x, y, probabilities=True).ravel())
    ours_loss_auc = _half_auc(loss_threshold_scores(s["target"], images, labels))

    class TrainedLikeTheTarget(PyTorchClassifier):
        """ART's shadow models call ``fit(x, y)`` with ART's defaults (batch 128, 10 epochs):
        train them like the target (and like our shadow models) instead."""

        def fit(self, x, y, **kwargs):  # noqa: ANN001, ANN003
            return super().fit(x, y, batch_size=32, nb_epochs=12)

    torch.manual_seed(0)
    template_net = _mlp()
    template = TrainedLikeTheTarget(
        model=template_net,
        loss=nn.CrossEntropyLoss(),
        input_shape=(1, 28, 28),
        nb_classes=K,
        optimizer=torch.optim.Adam(template_net.parameters(), lr=1e-3),
        clip_values=(0.0, 1.0),
    )
    shadow_x, shadow_y = s["shadow"]
    shadows = ShadowModels(template, num_shadow_models=NUM_SHADOW, random_state=0)
    (mx, my, mp), (nx, ny, npred) = shadows.generate_shadow_dataset(
        shadow_x.numpy(), np.eye(K)[shadow_y.numpy()], member_ratio=0.5
    )
    # The Shokri threat model: the API returns probability vectors (ART would otherwise feed
    # raw logits to its attack model); ART's default attack model is Shokri's neural network.
    torch.manual_seed(0)
    art_shadow = MembershipInferenceBlackBox(estimator, input_type="prediction")
    art_shadow.fit(mx, my, nx, ny, softmax(mp, axis=1), softmax(npred, axis=1))
    target_probs = softmax(estimator.predict(x), axis=1)
    art_shadow_auc = _half_auc(
        art_shadow.infer(x, np.eye(K)[y], pred=target_probs, probabilities=True).ravel()
    )
    ours_shadow = ShadowModelAttack(_train_fn(12), num_shadow=NUM_SHADOW).fit(shadow_x, shadow_y)
    ours_shadow_auc = _half_auc(ours_shadow.score(s["target"], images, labels))

    aucs = {
        "ours_loss": ours_loss_auc,
        "art_loss": art_loss_auc,
        "ours_shadow": ours_shadow_auc,
        "art_shadow": art_shadow_auc,
    }
    print("membership AUCs (ours vs ART):", aucs)
    assert min(aucs.values()) > 0.7, aucs
    assert abs(ours_loss_auc - art_loss_auc) <= ART_TOLERANCE, aucs
    assert abs(ours_shadow_auc - art_shadow_auc) <= ART_TOLERANCE, aucs
