"""Universal adversarial perturbation (Moosavi-Dezfooli et al. 2017; SGD variant of
Shafahi et al. 2020): one image-agnostic perturbation fitted on training images."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medsec.attacks.base import (
    Attack,
    LossFn,
    check_epsilon,
    check_positive,
    normalize,
    project,
)
from medsec.attacks.deepfool import DeepFool
from medsec.training.devices import model_device

METHODS = ("pgd", "deepfool")


class UAP(Attack):
    """Fit one perturbation ``v`` (C, H, W) with ``||v|| <= eps``; then ``attack(x, y)`` returns
    ``clip(x + v, 0, 1)``.

    ``method="pgd"``: per mini-batch, one projected signed-gradient step of size ``alpha`` on
    ``v`` that increases ``loss_fn`` w.r.t. the clean predictions of the not-yet-fooled
    examples (fast, batched). ``method="deepfool"``: the original algorithm: for the
    not-yet-fooled examples of each mini-batch, DeepFool at ``x + v`` gives the increment,
    ``v <- project(v + mean increment)`` (``batch_size=1`` is exactly the paper/ART loop).
    Passes over the data stop when the fooling rate (fraction of images whose predicted
    label changes) reaches ``target_fooling_rate`` or after ``epochs``.

    Args:
        model: pixel-space classifier returning logits (N, K).
        eps: budget of v in pixel units. norm: ``"linf"`` or ``"l2"``.
        method: ``"pgd"`` or ``"deepfool"``. epochs: maximum passes over the data.
        alpha: step of the pgd method (default eps / 4). batch_size: mini-batch size while fitting.
        target_fooling_rate: stop criterion (1 - delta in the paper).
        overshoot, deepfool_steps: DeepFool settings of the deepfool method.
        seed: seed of the data order. loss_fn: per-example loss of the pgd method.

    After :meth:`fit`: :attr:`perturbation` and :attr:`fooling_rate` (on the fit images).
    """

    name = "uap"

    def __init__(self, model: nn.Module, eps: float = 10 / 255, norm: str = "linf",
                 method: str = "pgd", epochs: int = 10, alpha: float | None = None,
                 batch_size: int = 32, target_fooling_rate: float = 0.8, overshoot: float = 0.02,
                 deepfool_steps: int = 50, seed: int = 0, loss_fn: LossFn | None = None) -> None:
        super().__init__(model, eps=eps, norm=norm, seed=seed, loss_fn=loss_fn)
        if method not in METHODS:
            raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
        self.method = method
        self.epochs = check_positive("epochs", epochs, integer=True)
        assert self.eps is not None
        self.alpha = self.eps / 4 if alpha is None else check_epsilon("alpha", alpha, norm)
        self.batch_size = check_positive("batch_size", batch_size, integer=True)
        if not 0 <= target_fooling_rate <= 1:
            raise ValueError(f"target_fooling_rate must lie in [0, 1], got {target_fooling_rate}")
        self.target_fooling_rate = float(target_fooling_rate)
        self.overshoot = check_epsilon("overshoot", overshoot, "l2")
        self.deepfool_steps = check_positive("deepfool_steps", deepfool_steps, integer=True)
        self.perturbation: Tensor | None = None
        self.fooling_rate: float | None = None

    # ------------------------------------------------------------------ public API

    def fit(self, images: Tensor, labels: Tensor) -> UAP:
        """Fit the perturbation on ``images`` (N, C, H, W) in [0, 1]; returns ``self``."""
        self._guarded(images, labels, self._fit)
        return self

    def __call__(self, images: Tensor, labels: Tensor) -> Tensor:
        """Return ``clip(images + v, 0, 1)``; a clear error if unfitted or shaped differently."""
        self.check_inputs(images, labels)
        self._require_fitted(images)
        return super().__call__(images, labels)

    def fooling_rate_on(self, images: Tensor, batch_size: int = 256) -> float:
        """Fraction of ``images`` whose predicted label changes when v is added (computed on the
        model's device)."""
        images = images.to(model_device(self.model))
        v = self._require_fitted(images)
        with torch.no_grad():
            changed = [
                self._fooled(images[i : i + batch_size], v).float().sum()
                for i in range(0, images.shape[0], batch_size)
            ]
        return float(torch.stack(changed).sum()) / images.shape[0]

    # ------------------------------------------------------------------ internals

    def _require_fitted(self, images: Tensor) -> Tensor:
        if self.perturbation is None:
            raise ValueError("UAP is not fitted: call uap.fit(train_images, train_labels) first")
        if tuple(self.perturbation.shape) != tuple(images.shape[1:]):
            raise ValueError(
                f"UAP was fitted on images shaped {tuple(self.perturbation.shape)}, "
                f"got {tuple(images.shape[1:])}"
            )
        return self.perturbation.to(images.device, images.dtype)

    def _fooled(self, x: Tensor, v: Tensor, clean_pred: Tensor | None = None) -> Tensor:
        with torch.no_grad():
            if clean_pred is None:
                clean_pred = self.model(x).argmax(1)
            return self.model((x + v).clamp(0.0, 1.0)).argmax(1) != clean_pred

    def _perturb(self, images: Tensor, labels: Tensor, clean_logits: Tensor | None) -> Tensor:
        return (images + self._require_fitted(images)).clamp(0.0, 1.0)

    def _fit(self, images: Tensor, labels: Tensor, clean_logits: Tensor | None) -> Tensor:
        assert clean_logits is not None
        assert self.eps is not None
        n = images.shape[0]
        pred = clean_logits.argmax(1)
        v = images.new_zeros(images.shape[1:])
        rate, epochs = 0.0, 0
        deepfool = DeepFool(
            self.model, steps=self.deepfool_steps, overshoot=self.overshoot, norm="l2"
        )
        for epochs in range(1, self.epochs + 1):  # noqa: B007 (reported after the loop)
            order = torch.randperm(n, generator=self.generator, device=images.device)
            for i in range(0, n, self.batch_size):
                idx = order[i : i + self.batch_size]
                x, p = images[idx], pred[idx]
                todo = ~self._fooled(x, v, p)
                self._count(idx)
                if not bool(todo.any()):
                    continue
                if self.method == "pgd":
                    v = self._pgd_step(x[todo], p[todo], v, idx[todo])
                else:
                    v = self._deepfool_step(deepfool, x[todo], p[todo], v, idx[todo])
            fooled = self._fooled(images, v, pred)
            self._count(None)
            rate = float(fooled.float().mean())
            if rate >= self.target_fooling_rate:
                break
        self.perturbation, self.fooling_rate = v.detach().clone(), rate
        self._iterations = epochs
        self._details = {"fooling_rate": rate, "epochs": float(epochs)}
        return (images + v).clamp(0.0, 1.0)

    def _pgd_step(self, x: Tensor, pred: Tensor, v: Tensor, index: Tensor) -> Tensor:
        assert self.eps is not None
        v_var = v.detach().requires_grad_(True)
        objective = self._objective(self.model((x + v_var).clamp(0.0, 1.0)), pred)
        (grad,) = torch.autograd.grad(objective.sum(), v_var)
        self._count(index)
        step = self.alpha * normalize(grad[None], self.norm)[0]
        return project((v + step)[None], self.eps, self.norm)[0]

    def _deepfool_step(
        self, deepfool: DeepFool, x: Tensor, pred: Tensor, v: Tensor, index: Tensor
    ) -> Tensor:
        assert self.eps is not None
        start = (x + v).clamp(0.0, 1.0)
        adv = deepfool(start, pred)
        assert deepfool.last_stats is not None
        self._queries.index_add_(0, index, deepfool.last_stats.queries)
        with torch.no_grad():
            ok = self.model(adv).argmax(1) != pred
        self._count(index)
        if not bool(ok.any()):
            return v
        increment = (adv - start)[ok].mean(dim=0)
        return project((v + increment)[None], self.eps, self.norm)[0]
