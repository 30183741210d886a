"""DP-SGD: settings validation and planning, compatibility errors, clipping, Lightning
training, epsilon."""

from __future__ import annotations

import copy
import warnings

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from medsec.models.factory import build_classifier
from medsec.privacy.accounting import epsilon_reference
from medsec.privacy.config import DPConfig
from medsec.privacy.dp import EpsilonLogger, check_dp_compatible, make_private, private_training
from medsec.privacy.plan import DPPlan, plan_dp, resolve_delta
from medsec.training.module import ClassifierModule

pytestmark = pytest.mark.usefixtures("one_thread")

N_TRAIN = 128



class TinyGN(nn.Module):
    """Normalisation, one conv + GroupNorm block and a linear head; (N,1,28,28) -> (N,2)."""

    def __init__(self, norm: nn.Module | None = None, act: nn.Module | None = None) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, stride=2, padding=1),
            norm if norm is not None else nn.GroupNorm(2, 4),
            act if act is not None else nn.ReLU(),
        )
        self.head = nn.Linear(4 * 14 * 14, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features((x - 0.5) / 0.25).flatten(1))


class Residual(nn.Module):
    """Valid layers, but ``out += x`` in-place on a hooked module's output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.head = nn.Linear(28 * 28, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        out += x
        return self.head(out.flatten(1))


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(N_TRAIN, 1, 28, 28, generator=g)
    y = (x[:, :, :14].mean(dim=(1, 2, 3)) > x[:, :, 14:].mean(dim=(1, 2, 3))).long()
    return x, y


def _loader(data, batch_size: int = 32) -> DataLoader:
    return DataLoader(TensorDataset(*data), batch_size=batch_size, shuffle=True)


def _plan(loader: DataLoader, epochs: int = 1, grad_sample_mode: str = "hooks",
          **dp) -> DPPlan:
    """``DPConfig(enabled=True, **dp)`` planned for ``loader``."""
    return plan_dp(DPConfig(enabled=True, **dp), len(loader.dataset), len(loader), epochs,
                   grad_sample_mode=grad_sample_mode)  # type: ignore[arg-type]


def _trainer(epochs: int, callbacks=()) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
    )


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one of noise_multiplier and target_epsilon"),
        ({"noise_multiplier": 1.0, "target_epsilon": 3.0}, "exactly one"),
        ({"noise_multiplier": -1.0}, "noise_multiplier"),
        ({"target_epsilon": 0.0}, "target_epsilon"),
        ({"noise_multiplier": 1.0, "max_grad_norm": 0.0}, "max_grad_norm"),
        ({"noise_multiplier": 1.0, "max_physical_batch_size": 0}, "max_physical_batch_size"),
        ({"noise_multiplier": 1.0, "accountant": "moments"}, "accountant"),
        ({"noise_multiplier": 1.0, "delta": 1.5}, "delta"),
        ({"noise_multiplier": 0.1}, "PRV"),
    ],
)
def test_settings_validation_names_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DPConfig(enabled=True, **kwargs)


def test_plan_resolves_delta_and_noise(data):
    assert resolve_delta(None, 1000) == pytest.approx(1e-4)
    with pytest.raises(ValueError, match=r"delta=0.001 must be < 1/N"):
        resolve_delta(1e-3, 1000)
    loader = _loader(data)
    with pytest.raises(ValueError, match="grad_sample_mode"):
        _plan(loader, grad_sample_mode="magic", noise_multiplier=1.0)
    with pytest.raises(ValueError, match="enabled"):
        plan_dp(DPConfig(), N_TRAIN, 4, 1)
    plan = _plan(loader, epochs=2, target_epsilon=4.0, accountant="rdp")
    assert plan.sample_rate == 0.25 and plan.planned_steps == 8
    assert plan.delta == pytest.approx(1 / (10 * N_TRAIN)) and plan.num_examples == N_TRAIN
    assert 0.9 * 4.0 <= plan.epsilon() <= 4.0 and plan.epsilon(4) < plan.epsilon()


def test_delta_too_large_for_the_training_set_fails_before_training(data):
    with pytest.raises(ValueError, match="delta"):  # 1/N = 0.0078
        _plan(_loader(data), noise_multiplier=1.0, delta=0.01)


def test_plan_must_be_made_for_the_loader(data):
    module = ClassifierModule(TinyGN(), 2)
    plan = _plan(_loader(data, 64), noise_multiplier=1.0)
    with pytest.raises(ValueError, match="plan for this loader"):
        with private_training(module, _loader(data), plan):
            pass
    assert module.external_optimizer is None


# --------------------------------------------------------------------------- compatibility


def test_batchnorm_error_names_the_layer():
    with pytest.raises(ValueError, match=r"layer 'features.1' \(BatchNorm2d\).*norm='group'"):
        check_dp_compatible(TinyGN(norm=nn.BatchNorm2d(4)))


def test_batchnorm_in_a_project_model_is_named():
    net = build_classifier("small_cnn", 1, 2, (28, 28), norm="batch")
    with pytest.raises(ValueError, match=r"backbone\.net\.layer_0\.adn\.N' \(BatchNorm2d\)"):
        check_dp_compatible(net)
    check_dp_compatible(build_classifier("small_cnn", 1, 2, (28, 28), norm="group"))


def test_non_affine_batchnorm_is_caught_too():
    with pytest.raises(ValueError, match="BatchNorm2d"):
        check_dp_compatible(TinyGN(norm=nn.BatchNorm2d(4, affine=False)))


def test_inplace_activation_is_named():
    with pytest.raises(ValueError, match=r"layer 'features.2' \(ReLU\).*inplace=False"):
        check_dp_compatible(TinyGN(act=nn.ReLU(inplace=True)))


def test_dry_run_catches_inplace_tensor_ops():
    check_dp_compatible(Residual())  # statically fine
    with pytest.raises(ValueError, match="in-place"):
        check_dp_compatible(Residual(), example_input=torch.rand(2, 1, 28, 28))


# --------------------------------------------------------------------------- clipping


def test_per_sample_gradients_are_exact_and_clipped(data):
    torch.manual_seed(0)
    net = TinyGN()
    reference = copy.deepcopy(net)
    images, labels = data[0][:16], data[1][:16]
    clip = 0.01  # far below the per-sample norms, so clipping is active
    loader = _loader(data, 16)
    optimizer, _, state = make_private(
        net,
        torch.optim.SGD(net.parameters(), lr=0.1),
        loader,
        _plan(loader, noise_multiplier=1.0, max_grad_norm=clip),
    )
    try:
        F.cross_entropy(net(images), labels).backward()
        # Independent per-sample gradients, one backward per example, on an unhooked copy.
        expected_sum = [torch.zeros_like(p) for p in reference.parameters()]
        norms = []
        for i in range(len(images)):
            grads = torch.autograd.grad(
                F.cross_entropy(reference(images[i : i + 1]), labels[i : i + 1]),
                list(reference.parameters()),
            )
            norm = torch.sqrt(sum((g**2).sum() for g in grads))
            norms.append(float(norm))
            factor = min(1.0, clip / (float(norm) + 1e-6))
            expected_sum = [s + factor * g for s, g in zip(expected_sum, grads, strict=True)]
        for p in net.parameters():
            assert p.grad_sample.shape == (len(images), *p.shape)
        optimizer.clip_and_accumulate()
        summed = [p.summed_grad for p in net.parameters()]
        total = torch.sqrt(sum((s**2).sum() for s in summed))
        assert min(norms) > clip
        assert float(total) <= clip * len(images) + 1e-6
        for got, want in zip(summed, expected_sum, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)
    finally:
        state.hooks.cleanup()


# --------------------------------------------------------------------------- training


def test_lightning_dp_training_epsilon_matches_dp_accounting(data):
    net = build_classifier("small_cnn", 1, 2, (28, 28), norm="group")
    keys = set(net.state_dict())
    module = ClassifierModule(net, num_classes=2, lr=1e-2)
    epochs = 2
    plan = _plan(_loader(data), epochs, noise_multiplier=1.1, max_grad_norm=1.0,
                 accountant="rdp", max_physical_batch_size=16)
    with private_training(module, _loader(data), plan) as (loader, state):
        assert module.external_optimizer is state.optimizer
        logger = EpsilonLogger(state)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _trainer(epochs, [logger]).fit(module, train_dataloaders=loader)
    # One optimizer step per logical (Poisson) batch, none lost to physical splitting.
    assert state.steps == plan.planned_steps == epochs * 4
    assert plan.sample_rate == pytest.approx(0.25)
    assert plan.delta == pytest.approx(1 / (10 * N_TRAIN))
    expected = epsilon_reference(1.1, plan.sample_rate, state.steps, plan.delta, "rdp")
    assert state.epsilon() == pytest.approx(expected, rel=1e-2)
    assert len(logger.epsilons) == epochs
    assert logger.epsilons[0] < logger.epsilons[1] == pytest.approx(state.epsilon())
    # The net is unchanged in identity and keys, its hooks are gone, the module is usable.
    assert module.net is net and set(net.state_dict()) == keys
    assert module.external_optimizer is None
    assert not any(hasattr(p, "grad_sample") for p in net.parameters())
    assert torch.isfinite(module(data[0][:4])).all()


def test_target_epsilon_is_met(data):
    module = ClassifierModule(TinyGN(), num_classes=2)
    plan = _plan(_loader(data), target_epsilon=4.0, accountant="rdp",
                 max_physical_batch_size=64)
    with private_training(module, _loader(data), plan) as (loader, state):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _trainer(1).fit(module, train_dataloaders=loader)
    assert 0.9 * 4.0 <= state.epsilon() <= 4.0
    assert state.epsilon() == pytest.approx(plan.epsilon())
    assert plan.params()["dp_target_epsilon"] == 4.0


def test_unreachable_target_epsilon_is_a_clear_error(data):
    with pytest.raises(ValueError, match="target_epsilon=0.01 is unreachable with 20 steps"):
        _plan(_loader(data), 5, target_epsilon=0.01, accountant="rdp")


def test_batchnorm_module_is_refused_before_training(data):
    module = ClassifierModule(TinyGN(norm=nn.BatchNorm2d(4)), num_classes=2)
    with pytest.raises(ValueError, match="features.1"):
        with private_training(module, _loader(data), _plan(_loader(data), noise_multiplier=1)):
            pass


def test_inplace_forward_code_is_refused_before_training(data):
    module = ClassifierModule(Residual(), num_classes=2)
    with pytest.raises(ValueError, match="in-place"):
        with private_training(module, _loader(data), _plan(_loader(data), noise_multiplier=1)):
            pass
    assert module.external_optimizer is None


def test_unsupported_lightning_combinations_are_refused(data):
    ghost = _plan(_loader(data), grad_sample_mode="ghost", noise_multiplier=1.0)
    with pytest.raises(ValueError, match="ghost"):
        with private_training(ClassifierModule(TinyGN(), 2), _loader(data), ghost):
            pass
    module = ClassifierModule(TinyGN(), 2, batch_transform=lambda net, x, y: (x, y))
    with pytest.raises(ValueError, match="batch_transform"):
        with private_training(module, _loader(data), _plan(_loader(data), noise_multiplier=1)):
            pass


def test_works_with_the_projects_fit_loop_and_validation(data):
    from medsec.training.fit import fit_classifier

    module = ClassifierModule(TinyGN(), num_classes=2, lr=1e-2)
    plan = _plan(_loader(data), 2, noise_multiplier=1.0, accountant="rdp",
                 max_physical_batch_size=8)
    val = DataLoader(TensorDataset(data[0][:32], data[1][:32]), batch_size=32)
    with private_training(module, _loader(data), plan) as (loader, state):
        logger = EpsilonLogger(state)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = fit_classifier(module, loader, val, epochs=2, seed=0, callbacks=[logger])
    assert len(result.history) == 2 and "val_acc" in result.history[0]
    assert state.steps == 8 and len(logger.epsilons) == 2
