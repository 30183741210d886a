"""Bad input gives a ValueError with a message that says what is wrong."""

from __future__ import annotations

import pytest
import torch

from medsec.attacks import ATTACKS, PGD, UAP, Square, attack_params, build_attack
from tests.unit.attack_fixtures import (  # noqa: F401
    ProbabilityModel,
    SegmentationModel,
    single_thread,
    trained_model,
)


@pytest.fixture(scope="module")
def setup():
    model, x, y = trained_model(3)
    return model, x[:8], y[:8]


def test_unknown_attack_name_lists_known_names(setup) -> None:
    with pytest.raises(ValueError, match="unknown attack 'pgdd'.*pgd.*square"):
        build_attack("pgdd", setup[0])


def test_unknown_parameter_is_named(setup) -> None:
    with pytest.raises(ValueError, match="unknown parameter.*'pgd': stepz.*accepted: eps"):
        build_attack("pgd", setup[0], stepz=3)


def test_attack_params_lists_defaults() -> None:
    params = attack_params("pgd")
    assert params["eps"] == pytest.approx(8 / 255) and params["steps"] == 10
    assert all("model" not in attack_params(name) for name in ATTACKS)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"eps": -0.1}, "eps must be >= 0"),
        ({"eps": 8}, "eps=8 exceeds 1 for the linf norm"),
        ({"eps": float("nan")}, "eps must be a finite number"),
        ({"alpha": -1.0}, "alpha must be >= 0"),
        ({"steps": 0}, "steps must be > 0"),
        ({"steps": 2.5}, "steps must be an integer"),
        ({"norm": "l1"}, "norm must be one of"),
    ],
)
def test_bad_parameters(params, match: str, setup) -> None:
    with pytest.raises(ValueError, match=match):
        build_attack("pgd", setup[0], **params)


def test_l2_eps_above_one_is_fine(setup) -> None:
    assert build_attack("pgd", setup[0], eps=3.0, norm="l2").eps == 3.0


def test_targeted_needs_support(setup) -> None:
    with pytest.raises(ValueError, match="unknown parameter.*'deepfool': targeted"):
        build_attack("deepfool", setup[0], targeted=True)


def test_probability_model_is_rejected(setup) -> None:
    model, x, y = setup
    with pytest.raises(ValueError, match="probabilities.*remove the final softmax"):
        PGD(ProbabilityModel(model))(x, y)


def test_segmentation_output_is_rejected(setup) -> None:
    _, x, y = setup
    with pytest.raises(ValueError, match=r"2-D logits of shape \(N=8, num_classes\).*segmentation"):
        PGD(SegmentationModel())(x, y % 2)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda x: x * 2, r"must lie in \[0, 1\]"),
        (lambda x: x - 0.9, r"must lie in \[0, 1\]"),
        (lambda x: x.masked_fill(x > 0.6, float("nan")), "NaN"),
        (lambda x: (x * 255).to(torch.uint8), "float tensor"),
        (lambda x: x[:, 0], r"N,C,H,W"),
        (lambda x: x[:0], "empty"),
    ],
)
def test_bad_images(mutate, match: str, setup) -> None:
    model, x, y = setup
    bad = mutate(x)
    with pytest.raises(ValueError, match=match):
        PGD(model)(bad, y[: bad.shape[0]])


@pytest.mark.parametrize(
    ("labels", "match"),
    [
        (torch.full((8,), 3), r"labels must lie in \[0, 3\)"),
        (torch.full((8,), -1), r"labels must lie in \[0, 3\)"),
        (torch.zeros(8), "integer"),
        (torch.zeros(7, dtype=torch.long), r"shape \(8,\)"),
        ([0] * 8, "torch.Tensor"),
    ],
)
def test_bad_labels(labels, match: str, setup) -> None:
    model, x, _ = setup
    with pytest.raises(ValueError, match=match):
        PGD(model)(x, labels)


def test_loss_fn_must_be_per_example(setup) -> None:
    model, x, y = setup
    mean_loss = lambda logits, labels: torch.nn.functional.cross_entropy(logits, labels)  # noqa: E731
    with pytest.raises(ValueError, match="one loss per example"):
        PGD(model, loss_fn=mean_loss)(x, y)


def test_square_rejects_volumes(setup) -> None:
    model, _, _ = setup
    with pytest.raises(ValueError, match="N,C,H,W"):
        Square(model)(torch.rand(2, 1, 4, 28, 28), torch.zeros(2, dtype=torch.long))


def test_uap_must_be_fitted(setup) -> None:
    model, x, y = setup
    with pytest.raises(ValueError, match="not fitted"):
        UAP(model)(x, y)
