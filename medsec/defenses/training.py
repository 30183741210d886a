"""Training-time defenses as hooks of the one training loop (:class:`ClassifierModule`).

Batch transforms ``(net, images, labels) -> (images, labels)`` replace a training batch;
loss hooks ``(net, images, labels) -> loss`` replace the cross-entropy. Both reuse the attack
classes; :func:`train_defended` runs them through :func:`medsec.training.job.train_classifier`.

- :class:`AdversarialBatches`: PGD adversarial training (Madry et al. 2018) and, with one
  step of 1.25 eps from a random start, fast FGSM training (Wong et al. 2020).
- :class:`TradesLoss` (Zhang et al. 2019), :class:`NoiseBatches` (Gaussian augmentation),
  :class:`TemperatureLoss` and :class:`DistillationLoss` (Papernot et al. 2016).

Multi-label data (multi-hot labels (N, L) in {0, 1}, one sigmoid per finding) is recognised
from the labels' shape: the attacks' loss is the per-example BCE (``medsec.attacks.base``),
TRADES's clean term is BCE and its divergence the per-finding Bernoulli KL summed over the
findings (:func:`bernoulli_kl`), and distillation uses sigmoid soft labels per finding.

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
from medsec.training.module import BatchTransform, LossHook, classification_loss


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


def bernoulli_kl(logits_p: Tensor, logits_q: Tensor) -> Tensor:
    """Per-example KL divergence (N,) >= 0 between independent Bernoulli findings, summed
    over the L findings: ``sum_l KL(Bern(sigmoid(p_l)) || Bern(sigmoid(q_l)))`` for logits
    (N, L); 0 exactly when ``logits_p == logits_q``. Computed with log-sigmoids (stable for
    large logits)."""
    p = torch.sigmoid(logits_p)
    log_p, log_not_p = F.logsigmoid(logits_p), F.logsigmoid(-logits_p)
    log_q, log_not_q = F.logsigmoid(logits_q), F.logsigmoid(-logits_q)
    return (p * (log_p - log_q) + (1 - p) * (log_not_p - log_not_q)).sum(1)


def trades_divergence(clean_logits: Tensor, adv_logits: Tensor, multilabel: bool) -> Tensor:
    """TRADES's per-example divergence (N,) of the adversarial from the clean output:
    ``KL(softmax(clean) || softmax(adv))``, or for multi-label outputs the per-finding
    Bernoulli KL summed over findings (:func:`bernoulli_kl`)."""
    if multilabel:
        return bernoulli_kl(clean_logits, adv_logits)
    return F.kl_div(adv_logits.log_softmax(1), clean_logits.softmax(1), reduction="none").sum(1)


class TradesLoss:
    """Loss hook: ``CE(f(x), y) + beta * KL(f(x) || f(x'))``, ``x'`` from PGD on the KL.

    Multi-hot labels (N, L): ``BCE(f(x), y) + beta * mean_i sum_l KL_Bern(...)`` (see
    :func:`trades_divergence`). The inner maximisation starts uniformly in the ball (TRADES
    starts at x + 0.001 N(0, 1)).
    """

    def __init__(self, eps: float, alpha: float, steps: int, beta: float, seed: int = 0) -> None:
        self.inner = AdversarialBatches(eps, alpha, steps, seed)
        self.beta = float(beta)

    def __call__(self, net: nn.Module, images: Tensor, labels: Tensor) -> Tensor:
        multilabel = labels.ndim == 2
        with torch.no_grad():
            was_training = net.training
            net.eval()
            clean = net(images)
            net.train(was_training)

        def kl(logits: Tensor, _labels: Tensor) -> Tensor:
            return trades_divergence(clean, logits, multilabel)

        adv = self.inner.attack(net, loss_fn=kl)(images, labels)
        logits = net(images)
        robust = trades_divergence(logits, net(adv), multilabel).mean()
        return classification_loss(logits, labels) + self.beta * robust


class NoiseBatches:
    """Batch transform: add N(0, sigma^2) noise (not clipped, as randomized smoothing adds it)."""

    def __init__(self, sigma: float) -> None:
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        self.sigma = float(sigma)

    def __call__(self, net: nn.Module, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        return images + self.sigma * torch.randn_like(images), labels


class TemperatureLoss:
    """Loss hook: cross-entropy of ``logits / T`` (the distillation teacher); BCE of
    ``logits / T`` for multi-hot labels (N, L)."""

    def __init__(self, temperature: float) -> None:
        self.temperature = float(temperature)

    def __call__(self, net: nn.Module, images: Tensor, labels: Tensor) -> Tensor:
        return classification_loss(net(images) / self.temperature, labels)


class DistillationLoss(TemperatureLoss):
    """Loss hook: cross-entropy of the student at temperature T against the teacher's soft
    labels ``softmax(teacher(x) / T)`` (the true labels are not used); multi-hot labels
    (N, L): BCE of the student's ``logits / T`` against ``sigmoid(teacher(x) / T)`` per
    finding, averaged over findings."""

    def __init__(self, teacher: nn.Module, temperature: float) -> None:
        super().__init__(temperature)
        self.teacher = teacher.eval()

    def __call__(self, net: nn.Module, images: Tensor, labels: Tensor) -> Tensor:
        with torch.no_grad():
            teacher = self.teacher(images) / self.temperature
        student = net(images) / self.temperature
        if labels.ndim == 2:
            return F.binary_cross_entropy_with_logits(student, torch.sigmoid(teacher))
        return -(teacher.softmax(1) * student.log_softmax(1)).sum(1).mean()


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
