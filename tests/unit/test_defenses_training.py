"""Training-time defenses go through the one training loop and do what they claim: adversarial
training (PGD, fast FGSM, TRADES) raises PGD robust accuracy over the same model trained
without it; the batch and loss hooks are used exactly as documented."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medsec.attacks import PGD
from medsec.defenses.training import (
    AdversarialBatches,
    DistillationLoss,
    NoiseBatches,
    TemperatureLoss,
)
from medsec.training.module import ClassifierModule
from tests.unit.attack_fixtures import TinyCNN, accuracy, single_thread  # noqa: F401
from tests.unit.defense_fixtures import EPS, tiny_data, tiny_model


def _pgd_acc(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return accuracy(model, PGD(model, eps=EPS, alpha=EPS / 4, steps=10)(x, y), y)


@pytest.mark.parametrize("kind", ["pgd_at", "fast_fgsm_at", "trades"])
def test_adversarial_training_raises_pgd_robust_accuracy(kind: str) -> None:
    x, y = tiny_data()
    plain, defended = tiny_model("plain"), tiny_model(kind)
    assert accuracy(defended, x, y) >= 0.9  # a modest clean cost at most
    plain_acc, defended_acc = _pgd_acc(plain, x, y), _pgd_acc(defended, x, y)
    assert defended_acc >= plain_acc + 0.2, (plain_acc, defended_acc)


def test_adversarial_batches_stay_in_budget_and_draw_new_starts() -> None:
    net = TinyCNN(3).train()
    x, y = tiny_data(16)
    batches = AdversarialBatches.fast_fgsm(EPS)
    assert (batches.alpha, batches.steps) == (pytest.approx(1.25 * EPS), 1)
    a1, labels = batches(net, x, y)
    a2, _ = batches(net, x, y)
    assert torch.equal(labels, y) and net.training  # model state restored
    for adv in (a1, a2):
        assert float((adv - x).abs().max()) <= EPS + 1e-6
        assert 0.0 <= float(adv.min()) and float(adv.max()) <= 1.0
    assert not torch.equal(a1, a2)  # a new random start per batch


def test_module_uses_the_hooks() -> None:
    calls: list[str] = []

    def transform(net, images, labels):
        calls.append("transform")
        return images * 0 + 0.5, labels

    def loss_fn(net, images, labels):
        calls.append("loss")
        assert torch.all(images == 0.5)
        return net(images).sum() * 0 + 7.0

    module = ClassifierModule(TinyCNN(3), 3, batch_transform=transform, loss_fn=loss_fn)
    x, y = tiny_data(4)
    loss = module.training_step((x, y), 0)
    assert calls == ["transform", "loss"] and float(loss) == 7.0
    plain = ClassifierModule(TinyCNN(3), 3)  # no hooks: the cross-entropy
    expected = F.cross_entropy(plain.net(x), y)
    assert float(plain.training_step((x, y), 0)) == pytest.approx(float(expected), rel=1e-6)


def test_noise_and_distillation_losses() -> None:
    torch.manual_seed(0)
    x, y = tiny_data(64)
    noisy, labels = NoiseBatches(0.2)(TinyCNN(3), x, y)
    assert torch.equal(labels, y)
    assert float((noisy - x).std()) == pytest.approx(0.2, rel=0.05)  # not clipped
    student, teacher = TinyCNN(3), TinyCNN(3)
    t = 20.0
    assert float(TemperatureLoss(t)(student, x, y)) == pytest.approx(
        float(F.cross_entropy(student(x) / t, y)), rel=1e-6)
    soft = (teacher(x) / t).softmax(1)
    expected = -(soft * (student(x) / t).log_softmax(1)).sum(1).mean()
    assert float(DistillationLoss(teacher, t)(student, x, y)) == pytest.approx(
        float(expected), rel=1e-6)
