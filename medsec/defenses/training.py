"""Training-time defenses as hooks of the one training loop (:class:`ClassifierModule`).

Batch transforms ``(net, images, labels) -> (images, labels)`` replace a training batch;
loss hooks ``(net, images, labels) -> loss`` replace the cross-entropy. Both reuse the attack
classes; :func:`train_defended` runs them through :func:`medsec.training.job.train_classifier`.

- :class:`AdversarialBatches`: PGD adversarial training (Madry et al. 2018) and, with one
  step of 1.25 eps from a random start, fast FGSM training (Wong et al. 2020).
- :class:`TradesLoss` (Zhang et al. 2019), :class:`NoiseBatches` (Gaussian augmentation),
  :class:`TemperatureLoss` and :class:`DistillationLoss` (Papernot et al. 2016).

Adversarial examples are generated with the network in eval mode (the attacks' model guard);
every call draws a new random start (seed + call count), so runs stay reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn

from medsec.attacks.base import LossFn, check_epsilon
from medsec.attacks.pgd import PGD
from medsec.data.types import LoadedDataset
from medsec.training.config import ClassifierRecipe
from medsec.training.job import (
    FitStrategy,
    TrainedClassifier,
    build_module,
    plain_fit,
    train_classifier,
)
from medsec.training.module import BatchTransform, LossHook


class AdversarialBatches:
    """Batch transform: replace the batch by PGD examples (L-inf ``eps``, ``steps`` of
    ``alpha``, random start, final iterate as in Madry et al.).

    ``steps=1, alpha=1.25 * eps`` is fast FGSM training with a random start (Wong et al.).
    ``attack_cls`` is :class:`PGD` for classifiers; a subclass with the same constructor (e.g.
    ``medsec.segmentation.attacks.SegPGD``, dense labels) trains other models the same way.
    """

    def __init__(self, eps: float, alpha: float, steps: int, seed: int = 0,
                 attack_cls: type[PGD] = PGD) -> None:
        self.eps = check_epsilon("eps", eps)
        self.alpha = check_epsilon("alpha", alpha)
        self.steps, self.seed, self.calls = int(steps), int(seed), 0
        self.attack_cls = attack_cls

    @classmethod
    def fast_fgsm(cls, eps: float, alpha: float | None = None, seed: int = 0) -> AdversarialBatches:
        return cls(eps, 1.25 * eps if alpha is None else alpha, 1, seed)

    def attack(self, net: nn.Module, loss_fn: LossFn | None = None) -> PGD:
        """An ``attack_cls`` PGD on ``net`` with a fresh random start (seed + call count)."""
        self.calls += 1
        return self.attack_cls(net, eps=self.eps, alpha=self.alpha, steps=self.steps,
                               random_start=True, early_stop=False, seed=self.seed + self.calls,
                               loss_fn=loss_fn)

    def __call__(self, net: nn.Module, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        return self.attack(net)(images, labels), labels


class TradesLoss:
    """Loss hook: ``CE(f(x), y) + beta * KL(f(x) || f(x'))``, ``x'`` from PGD on the KL.

    The inner maximisation starts uniformly in the ball (TRADES starts at x + 0.001 N(0, 1)).
    """

    def __init__(self, eps: float, alpha: float, steps: int, beta: float, seed: int = 0) -> None:
        self.inner = AdversarialBatches(eps, alpha, steps, seed)
        self.beta = float(beta)

    def __call__(self, net: nn.Module, images: Tensor, labels: Tensor) -> Tensor:
        with torch.no_grad():
            was_training = net.training
            net.eval()
            p_clean = net(images).softmax(1)
            net.train(was_training)

        def kl(logits: Tensor, _labels: Tensor) -> Tensor:
            return F.kl_div(logits.log_softmax(1), p_clean, reduction="none").sum(1)

        adv = self.inner.attack(net, loss_fn=kl)(images, labels)
        logits = net(images)
        robust = F.kl_div(net(adv).log_softmax(1), logits.softmax(1), reduction="batchmean")
        return F.cross_entropy(logits, labels) + self.beta * robust


class NoiseBatches:
    """Batch transform: add N(0, sigma^2) noise (not clipped, as randomized smoothing adds it)."""

    def __init__(self, sigma: float) -> None:
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        self.sigma = float(sigma)

    def __call__(self, net: nn.Module, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        return images + self.sigma * torch.randn_like(images), labels


class TemperatureLoss:
    """Loss hook: cross-entropy of ``logits / T`` (the distillation teacher)."""

    def __init__(self, temperature: float) -> None:
        self.temperature = float(temperature)

    def __call__(self, net: nn.Module, images: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(net(images) / self.temperature, labels)


class DistillationLoss(TemperatureLoss):
    """Loss hook: cross-entropy of the student at temperature T against the teacher's soft
    labels ``softmax(teacher(x) / T)`` (the true labels are not used)."""

    def __init__(self, teacher: nn.Module, temperature: float) -> None:
        super().__init__(temperature)
        self.teacher = teacher.eval()

    def __call__(self, net: nn.Module, images: Tensor, labels: Tensor) -> Tensor:
        with torch.no_grad():
            soft = (self.teacher(images) / self.temperature).softmax(1)
        log_p = (net(images) / self.temperature).log_softmax(1)
        return -(soft * log_p).sum(1).mean()


@dataclass
class DefendedTraining:
    """What :func:`train_defended` needs besides the recipe."""

    batch_transform: BatchTransform | None = None
    loss_fn: LossHook | None = None
    epochs: int | None = None
    init_state: dict[str, Tensor] | None = None


def train_defended(
    recipe: ClassifierRecipe,
    data: LoadedDataset,
    hooks: DefendedTraining,
    callbacks: Sequence[Callback] = (),
    strategy: FitStrategy = plain_fit,
) -> TrainedClassifier:
    """Train ``recipe``'s classifier through the one training loop with defense hooks.

    ``hooks.epochs`` overrides ``recipe.train.epochs``; ``hooks.init_state`` starts from given
    weights (e.g. the undefended model's, to fine-tune). Model selection is
    ``recipe.train.select_best``; ``strategy`` is the fit (plain, or DP-SGD from the stage).
    """
    recipe = recipe.derive(epochs=hooks.epochs)
    module = build_module(recipe, data)
    module.batch_transform = hooks.batch_transform
    module.loss_fn = hooks.loss_fn
    if hooks.init_state is not None:
        module.net.load_state_dict(hooks.init_state)
    return train_classifier(recipe, data, callbacks, module=module, strategy=strategy)
