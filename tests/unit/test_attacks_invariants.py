"""Threat-model invariants for every registered attack (parametrised over the registry)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from medsec.attacks import ATTACKS, UAP, Attack, build_attack
from medsec.metrics.image_quality import perturbation_norms
from tests.unit.attack_fixtures import single_thread, trained_model  # noqa: F401

EPS = 8 / 255
L2_EPS = 0.5

# (registry name, constructor params): small settings so each case runs in well under a second.
CASES: list[tuple[str, dict[str, Any]]] = [
    ("fgsm", {"eps": EPS}),
    ("fgsm", {"eps": L2_EPS, "norm": "l2"}),
    ("bim", {"eps": EPS, "steps": 3}),
    ("pgd", {"eps": EPS, "steps": 3, "restarts": 2}),
    ("pgd", {"eps": L2_EPS, "alpha": 0.2, "steps": 3, "norm": "l2"}),
    ("mim", {"eps": EPS, "steps": 3}),
    ("cw", {"steps": 10, "binary_search_steps": 2, "lr": 0.05}),
    ("cw", {"steps": 10, "binary_search_steps": 2, "lr": 0.05, "eps": 0.2}),
    ("deepfool", {"steps": 10}),
    ("deepfool", {"steps": 10, "eps": 0.2}),
    ("deepfool", {"steps": 10, "norm": "linf", "eps": EPS}),
    ("apgd", {"eps": EPS, "steps": 5}),
    ("apgd", {"eps": L2_EPS, "steps": 5, "norm": "l2", "loss": "margin"}),
    ("square", {"eps": EPS, "n_queries": 20}),
    ("square", {"eps": L2_EPS, "n_queries": 20, "norm": "l2"}),
    ("one_pixel", {"pixels": 2, "population": 8, "steps": 3}),
    ("uap", {"eps": EPS, "epochs": 2}),
    ("uap", {"eps": L2_EPS, "epochs": 1, "norm": "l2", "method": "deepfool", "batch_size": 8}),
    ("autoattack_lite", {"eps": EPS, "steps": 5, "n_queries": 10}),
    ("autoattack_lite", {"eps": L2_EPS, "steps": 5, "n_queries": 10, "norm": "l2"}),
]
IDS = [f"{name}-{i}" for i, (name, _) in enumerate(CASES)]


def test_every_registered_attack_has_a_case() -> None:
    assert {name for name, _ in CASES} == set(ATTACKS)


@pytest.fixture(scope="module")
def setup() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    model, x, y = trained_model(3)
    return model, x[:16], y[:16]


def _run(attack: Attack, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if isinstance(attack, UAP):
        attack.fit(x, y)
    return attack(x, y)


def _assert_budget(
    attack: Attack, params: dict[str, Any], x: torch.Tensor, adv: torch.Tensor
) -> None:
    delta = adv - x
    norms = perturbation_norms(delta)
    if attack.norm == "l0":
        assert norms["l0"].max() <= params["pixels"]
    elif attack.eps is not None:
        assert norms[attack.norm].max() <= attack.eps + 1e-6


@pytest.mark.parametrize(("name", "params"), CASES, ids=IDS)
def test_budget_range_and_shape(name: str, params: dict[str, Any], setup) -> None:
    model, x, y = setup
    attack = build_attack(name, model, **params)
    adv = _run(attack, x, y)
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert torch.isfinite(adv).all()
    assert adv.min() >= 0.0 and adv.max() <= 1.0
    _assert_budget(attack, params, x, adv)
    assert attack.last_stats is not None
    assert attack.last_stats.queries.shape == (x.shape[0],)
    assert (attack.last_stats.queries >= 1).all()


@pytest.mark.parametrize(("name", "params"), CASES, ids=IDS)
def test_model_state_untouched(name: str, params: dict[str, Any], setup) -> None:
    model, x, y = setup
    model.train()
    model.head.eval()  # a mixed-mode model must be restored module by module
    model.features[0].weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    modes = [m.training for m in model.modules()]
    try:
        _run(build_attack(name, model, **params), x, y)
        assert [m.training for m in model.modules()] == modes
        assert [p.requires_grad for p in model.parameters()] == flags
        assert all(p.grad is None for p in model.parameters())
        for k, v in model.state_dict().items():
            assert torch.equal(v, before[k]), k
    finally:
        model.eval()
        model.features[0].weight.requires_grad_(True)


@pytest.mark.parametrize(("name", "params"), CASES, ids=IDS)
def test_deterministic_under_seed(name: str, params: dict[str, Any], setup) -> None:
    model, x, y = setup
    first = _run(build_attack(name, model, seed=3, **params), x, y)
    attack = build_attack(name, model, seed=3, **params)
    assert torch.equal(first, _run(attack, x, y))
    assert torch.equal(first, _run(attack, x, y))  # the same instance called again


class TinyVolumeNet(nn.Module):
    """(N, 1, D, H, W) volumes -> 2 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 4, 3, padding=1)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x - 0.5)).mean(dim=(2, 3, 4)))


@pytest.mark.parametrize("name", ["fgsm", "pgd", "apgd", "deepfool"])
def test_volumes_are_supported(name: str) -> None:
    torch.manual_seed(0)
    model = TinyVolumeNet().eval()
    x = torch.rand(4, 1, 6, 8, 8)
    y = torch.tensor([0, 1, 0, 1])
    params = {"steps": 3} if name != "fgsm" else {}
    if name != "deepfool":
        params["eps"] = EPS
    else:
        params["eps"] = 0.3
    attack = build_attack(name, model, **params)
    adv = attack(x, y)
    assert adv.shape == x.shape and 0 <= adv.min() and adv.max() <= 1
    assert perturbation_norms(adv - x)[attack.norm].max() <= params["eps"] + 1e-6
