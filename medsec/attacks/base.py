"""The shared core of every evasion attack.

One implementation each of: projection onto the Linf/L2 ball and the pixel box [0, 1],
seeded randomness, query counting and per-call statistics; input/output validation and the
model-state guard come from :mod:`medsec.models.checks` and :mod:`medsec.models.guard`.
Attacks subclass :class:`Attack` and implement :meth:`Attack._perturb`.

Conventions: images are float tensors in [0, 1], shape (N, C, H, W) or (N, C, D, H, W); the
model maps pixel-space images to logits (N, num_classes); epsilons are in pixel units.

Multi-label data (several findings per image): labels are multi-hot (N, L) in {0, 1} and the
model returns one logit per finding (N, L), read through a sigmoid. A finding is predicted
when its logit is >= 0 (probability >= 0.5); an example is *correct* when every finding is
right (exact match) and *adversarial* when at least one is wrong. The default losses choose
by the label shape: (N,) class indices -> cross-entropy / CW margin, (N, L) multi-hot ->
:func:`bce_loss` / :func:`multilabel_margin_loss`. Attacks whose idea needs classes
(targeted modes, DeepFool, CW, one-pixel, UAP) set ``supports_multilabel = False`` and refuse
multi-hot labels with a ValueError.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medsec.models.checks import (
    check_findings,
    check_images,
    check_label_dtype,
    check_label_range,
    check_label_shape,
    check_logits,
    check_multi_hot,
    is_multi_hot,
)
from medsec.models.guard import model_guard
from medsec.training.devices import model_device

LossFn = Callable[[Tensor, Tensor], Tensor]
"""``loss_fn(logits, labels) -> (N,)`` per-example loss that an untargeted attack maximises."""

Work = Callable[[Tensor, Tensor, Tensor | None], Tensor]
"""``work(images, labels, clean_logits) -> adversarial images``, run by ``Attack._guarded``;
``clean_logits`` is None for attacks with ``needs_clean_logits = False``."""

NORMS = ("linf", "l2")


# --------------------------------------------------------------------------- losses


def bce_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Multi-label: per-example binary cross-entropy with logits averaged over the L findings,
    shape (N,), for logits (N, L) and multi-hot labels (N, L) in {0, 1} - the training loss
    (:func:`medsec.training.module.classification_loss` with ``reduction="none"``)."""
    per_finding = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype),
                                                     reduction="none")
    return per_finding.mean(dim=1)


def finding_margins(logits: Tensor, labels: Tensor) -> Tensor:
    """Multi-label: signed per-finding margins ``s_l = (2 y_l - 1) z_l`` (N, L); a finding is
    right when ``s_l > 0`` (and at the tie ``z_l = 0`` when ``y_l = 1``)."""
    return (2 * labels.to(logits.dtype) - 1) * logits


def multilabel_margin_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Multi-label margin ``-min_l s_l`` (N,) (:func:`finding_margins`): positive iff at least
    one finding is wrong at the sigmoid-0.5 threshold (logit 0). At an exact tie ``z_l = 0``
    on a negative finding the finding counts as predicted (wrong) while the loss is 0."""
    return -finding_margins(logits, labels).amin(dim=1)


def cross_entropy_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-example loss, shape (N,): cross-entropy for class indices (N,); for multi-hot
    labels (N, L) the binary cross-entropy averaged over findings (:func:`bce_loss`)."""
    if labels.dim() == 2:
        return bce_loss(logits, labels)
    return F.cross_entropy(logits, labels, reduction="none")


def margin_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-example CW margin ``max_{j != y} z_j - z_y`` (N,): positive iff misclassified. For
    multi-hot labels (N, L): :func:`multilabel_margin_loss`."""
    if labels.dim() == 2:
        return multilabel_margin_loss(logits, labels)
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return others.amax(dim=1) - true


def predictions(logits: Tensor, labels: Tensor) -> Tensor:
    """The model's decisions in the labels' form: class indices (N,) (argmax) for labels
    (N,); for multi-hot labels (N, L) the findings with logit >= 0 (sigmoid >= 0.5), a
    multi-hot tensor (N, L) of the labels' dtype. Compare with ``labels`` per example through
    :func:`medsec.metrics.robustness.robust_correct`."""
    if labels.dim() == 2:
        return (logits >= 0).to(labels.dtype)
    return logits.argmax(dim=1)


# --------------------------------------------------------------------------- parameters


def check_norm(norm: str, allowed: tuple[str, ...] = NORMS) -> str:
    """Return ``norm`` if it is one of ``allowed``, else raise ValueError."""
    if norm not in allowed:
        raise ValueError(f"norm must be one of {list(allowed)}, got {norm!r}")
    return norm


def check_epsilon(name: str, value: float, norm: str = "linf") -> float:
    """Validate a budget in pixel units: finite, >= 0, and <= 1 for Linf."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0 (pixel units, e.g. 8/255), got {value}")
    if norm == "linf" and value > 1:
        raise ValueError(
            f"{name}={value} exceeds 1 for the linf norm: epsilons are in pixel units of [0, 1] "
            "images (8/255, not 8)"
        )
    return float(value)


def check_positive(
    name: str, value: float, *, integer: bool = False, allow_zero: bool = False
) -> Any:
    """Validate a positive (or non-negative) number; ``integer`` also requires an int."""
    ok_type = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok_type or not math.isfinite(value):
        kind = "an integer" if integer else "a finite number"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")
    return value


# --------------------------------------------------------------------------- geometry


def _flat(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], -1)


def per_example(v: Tensor, like: Tensor) -> Tensor:
    """Reshape a (N,) tensor to broadcast against ``like`` (N, ...)."""
    return v.reshape(-1, *([1] * (like.dim() - 1)))


def lp_norm(t: Tensor, norm: str) -> Tensor:
    """Per-example norm (N,) of ``t`` (N, ...); ``norm`` in linf, l2, l1, l0."""
    flat = _flat(t)
    if norm == "linf":
        return flat.abs().amax(dim=1)
    if norm == "l2":
        return flat.norm(dim=1)
    if norm == "l1":
        return flat.abs().sum(dim=1)
    if norm == "l0":
        return (flat != 0).sum(dim=1).to(t.dtype)
    raise ValueError(f"unknown norm {norm!r}")


def normalize(grad: Tensor, norm: str) -> Tensor:
    """Steepest-ascent direction of unit ``norm``: sign for linf, grad/||grad||_2 for l2."""
    if norm == "linf":
        return grad.sign()
    scale = lp_norm(grad, "l2").clamp_min(1e-12)
    return grad / per_example(scale, grad)


def project(delta: Tensor, eps: float, norm: str) -> Tensor:
    """Project perturbations ``delta`` (N, ...) onto the ``norm`` ball of radius ``eps``."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    norms = lp_norm(delta, "l2")
    factor = (eps / norms.clamp_min(1e-12)).clamp_max(1.0)
    return delta * per_example(factor, delta)


def clip_to_ball(x_adv: Tensor, x: Tensor, eps: float, norm: str) -> Tensor:
    """Return the point ``x + project(x_adv - x)`` clipped to [0, 1].

    For linf this is the exact projection onto the intersection of the ball and the box; for l2
    clipping after the ball projection can only shrink the norm, so the result stays feasible.
    """
    return (x + project(x_adv - x, eps, norm)).clamp_(0.0, 1.0)


def coarsen(x: Tensor, scale: int) -> Tensor:
    """Project a dense tensor (N, C, *S) onto tensors that are constant on blocks of ``scale``
    pixels/voxels per side (block mean, repeated); ``scale=1`` returns it as is. Raises
    ValueError when ``scale`` does not divide every spatial side."""
    if scale == 1:
        return x
    spatial = x.shape[2:]
    if scale < 1 or any(side % scale for side in spatial):
        raise ValueError(f"scale {scale} must divide the image size {tuple(spatial)}")
    pool = F.avg_pool3d if len(spatial) == 3 else F.avg_pool2d
    return F.interpolate(pool(x, scale), scale_factor=scale, mode="nearest")


def random_init(x: Tensor, eps: float, norm: str, generator: torch.Generator) -> Tensor:
    """A random start inside the ball: uniform in the linf cube, uniform in the l2 ball."""
    if norm == "linf":
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (x + (2 * u - 1) * eps).clamp_(0.0, 1.0)
    g = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    d = g[0].numel()
    r = torch.rand(x.shape[0], generator=generator, device=x.device, dtype=x.dtype) ** (1.0 / d)
    return (x + normalize(g, "l2") * per_example(r * eps, x)).clamp_(0.0, 1.0)


# --------------------------------------------------------------------------- model state


# --------------------------------------------------------------------------- statistics


@dataclass
class AttackStats:
    """What one call of an attack cost.

    ``queries`` (N,) counts model forward passes per example (a forward+backward pass is one
    query; the separate clean evaluation, where the attack makes one, is included).
    ``iterations`` is the number of outer iterations the attack ran; ``details`` holds
    attack-specific numbers (e.g. ``fooling_rate`` of a UAP fit).
    """

    queries: Tensor
    seconds: float
    iterations: int
    details: dict[str, float] = field(default_factory=dict)

    @property
    def n_examples(self) -> int:
        return int(self.queries.numel())

    def as_dict(self) -> dict[str, float]:
        """Flat lower_snake_case summary for logging."""
        n = max(self.n_examples, 1)
        out = {
            "mean_queries": float(self.queries.float().mean()) if self.n_examples else 0.0,
            "max_queries": float(self.queries.max()) if self.n_examples else 0.0,
            "total_queries": float(self.queries.sum()),
            "seconds": self.seconds,
            "seconds_per_image": self.seconds / n,
            "iterations": float(self.iterations),
        }
        out.update(self.details)
        return out


# --------------------------------------------------------------------------- base class


class Attack:
    """Base class: ``adv = attack(images, labels)``.

    Subclasses set the class attributes below and implement :meth:`_perturb`. To reuse an
    attack on another task (e.g. segmentation), override :meth:`check_label_shape`,
    :meth:`check_output`, :meth:`check_labels`, :meth:`is_adversarial` and
    :meth:`adversarial_margin`, and pass a ``loss_fn`` returning one loss per example.

    Args:
        model: maps images in [0, 1] to logits (N, K); used in eval mode, never modified.
        eps: perturbation budget in pixel units (``None`` for unbounded minimal-norm attacks).
        norm: the threat model's norm, one of the class's ``norms`` (no default: every attack
            states it; it is what the suite records).
        targeted: labels passed to ``__call__`` are targets to reach instead of true labels.
        seed: seed of the per-call ``torch.Generator``; the same seed gives the same output.
        loss_fn: per-example loss ``(logits, labels) -> (N,)`` maximised by untargeted
            attacks and minimised by targeted ones; defaults to cross-entropy.
    """

    name: ClassVar[str] = "attack"
    norms: ClassVar[tuple[str, ...]] = NORMS
    supports_targeted: ClassVar[bool] = False
    supports_multilabel: ClassVar[bool] = False
    """True: untargeted attacks on multi-hot labels (N, L) work (see the module docstring)."""
    spatial_dims: ClassVar[tuple[int, ...]] = (2, 3)
    needs_clean_logits: ClassVar[bool] = True
    """False: skip the separate clean forward pass; the model output is then validated on the
    attack's first :meth:`_gradient` call, which must come before any other model call."""

    def __init__(self, model: nn.Module, *, eps: float | None, norm: str, targeted: bool = False,
                 seed: int = 0, loss_fn: LossFn | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.norm = check_norm(norm, self.norms)
        self.eps = None if eps is None else check_epsilon("eps", eps, self.norm)
        if targeted and not self.supports_targeted:
            raise ValueError(f"{type(self).__name__} has no targeted mode")
        self.targeted = bool(targeted)
        self.seed = int(check_positive("seed", seed, integer=True, allow_zero=True))
        self.loss_fn: LossFn = loss_fn or cross_entropy_loss
        self.last_stats: AttackStats | None = None
        # per-call state, set by __call__
        self.generator = torch.Generator()
        self.num_classes = 0
        self._queries = torch.zeros(0, dtype=torch.int64)
        self._iterations = 0
        self._details: dict[str, float] = {}
        self._validated = False
        self._multilabel = False

    def __repr__(self) -> str:
        keys = ("eps", "norm", "targeted", "seed")
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in keys if hasattr(self, k))
        return f"{type(self).__name__}({args})"

    # ------------------------------------------------------------------ the call

    def __call__(self, images: Tensor, labels: Tensor) -> Tensor:
        """Return adversarial images (same shape and dtype as ``images``, in [0, 1]).

        ``labels`` (N,) int64 are the true labels, or the targets when ``targeted=True``;
        multi-hot (N, L) in {0, 1} for multi-label data (untargeted attacks with
        ``supports_multilabel``).
        """
        return self._guarded(images, labels, self._perturb)

    def _guarded(self, images: Tensor, labels: Tensor, work: Work) -> Tensor:
        """Validate, then run ``work(images, labels, clean_logits)`` under the model guard
        with a fresh seeded generator and query counter; records :attr:`last_stats`. The work
        runs on the model's device (inputs moved there once); the result is returned on the
        device of ``images``."""
        labels = self.check_inputs(images, labels)
        self._multilabel = is_multi_hot(labels)
        home, device = images.device, model_device(self.model)
        images, labels = images.to(device), labels.to(device)
        start = time.perf_counter()
        with model_guard(self.model), torch.inference_mode(False), torch.enable_grad():
            if images.is_inference():
                images = images.clone()
            self._begin(images)
            clean_logits = self._clean_logits(images, labels) if self.needs_clean_logits else None
            adv = work(images, labels, clean_logits).detach()
        self.last_stats = AttackStats(
            queries=self._queries.clone(),
            seconds=time.perf_counter() - start,
            iterations=self._iterations,
            details=dict(self._details),
        )
        return adv.to(home)

    def _perturb(self, images: Tensor, labels: Tensor, clean_logits: Tensor | None) -> Tensor:
        """Attack-specific work: images (N, ...) in [0,1] -> adversarial images in [0,1]."""
        raise NotImplementedError

    def _begin(self, images: Tensor) -> None:
        self.generator = torch.Generator(device=images.device).manual_seed(self.seed)
        self._queries = torch.zeros(images.shape[0], dtype=torch.int64, device=images.device)
        self._iterations = 0
        self._details = {}
        self._validated = False

    # ------------------------------------------------------------------ validation

    def check_inputs(self, images: Tensor, labels: Tensor) -> Tensor:
        """Validate images (float, N,C,H,W or N,C,D,H,W, finite, in [0,1]) and labels.

        Returns the labels as int64 on the images' device (multi-hot (N, L) labels: float32).
        """
        check_images(images, self.spatial_dims, type(self).__name__)
        if is_multi_hot(labels):
            self.check_multilabel_support()
            check_multi_hot(labels, images.shape[0])
            return labels.to(device=images.device, dtype=torch.float32)
        check_label_dtype(labels)
        self.check_label_shape(labels, images)
        return labels.to(device=images.device, dtype=torch.int64)

    def check_multilabel_support(self) -> None:
        """ValueError when this attack cannot take multi-hot labels (N, L)."""
        name = type(self).__name__
        if not self.supports_multilabel:
            raise ValueError(f"{name} needs one class per image: it does not support "
                             "multi-label (multi-hot (N, L)) labels")
        if self.targeted:
            raise ValueError(f"targeted {name} needs one target class per image: not defined "
                             "for multi-label (multi-hot (N, L)) labels")

    def check_label_shape(self, labels: Tensor, images: Tensor) -> None:
        """Classification: one label per image, shape (N,). Override for dense labels."""
        check_label_shape(labels, images)

    def check_output(self, logits: Tensor, images: Tensor) -> int:
        """Check the clean model output; return the number of classes.

        Classification contract: 2-D finite logits (N, K), K >= 2, not probabilities (for
        multi-hot labels one logit per finding, K >= 1, not sigmoid probabilities).
        """
        return check_logits(logits, images.shape[0], multilabel=self._multilabel)

    def check_labels(self, labels: Tensor, num_classes: int) -> None:
        """Check that labels (N,) lie in [0, num_classes), or that multi-hot labels (N, L)
        have L == num_classes findings."""
        if labels.dim() == 2:
            check_findings(labels, num_classes)
        else:
            check_label_range(labels, num_classes)

    def _validate(self, logits: Tensor, images: Tensor, labels: Tensor) -> None:
        """Check the model output, the label range and the loss shape once per call."""
        self.num_classes = self.check_output(logits, images)
        self.check_labels(labels, self.num_classes)
        loss = self.loss_fn(logits.detach(), labels)
        if not isinstance(loss, Tensor) or loss.shape != (images.shape[0],):
            shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
            raise ValueError(
                f"loss_fn must return one loss per example, shape ({images.shape[0]},), got {shape}"
            )
        self._validated = True

    def _clean_logits(self, images: Tensor, labels: Tensor) -> Tensor:
        with torch.inference_mode():
            logits = self.model(images)
        self._queries += 1
        self._validate(logits, images, labels)
        return logits

    # ------------------------------------------------------------------ success criteria

    def is_adversarial(self, logits: Tensor, labels: Tensor) -> Tensor:
        """(N,) bool: misclassified (untargeted) or classified as the target (targeted);
        multi-hot labels (N, L): at least one finding wrong (logit >= 0 predicts a finding)."""
        if labels.dim() == 2:
            return (predictions(logits, labels) != labels).any(dim=1)
        pred = logits.argmax(dim=1)
        return pred == labels if self.targeted else pred != labels

    def adversarial_margin(self, logits: Tensor, labels: Tensor) -> Tensor:
        """(N,) margin that is negative when the example is adversarial (lower = stronger);
        multi-hot labels: ``min_l s_l`` (:func:`multilabel_margin_loss`, ties at 0)."""
        m = margin_loss(logits, labels)
        return m if self.targeted else -m

    # ------------------------------------------------------------------ model access

    def _count(self, index: Tensor | None) -> None:
        if index is None:
            self._queries += 1
        else:
            self._queries.index_add_(0, index, torch.ones_like(index))

    def _forward(self, x: Tensor, index: Tensor | None = None) -> Tensor:
        """Forward-only logits (inference mode); counts one query per example of ``index``."""
        with torch.inference_mode():
            logits = self.model(x)
        self._count(index)
        return logits

    def _objective(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Per-example objective to *maximise*: +loss untargeted, -loss targeted."""
        loss = self.loss_fn(logits, labels)
        return -loss if self.targeted else loss

    def _gradient(self, x: Tensor, labels: Tensor,
                  index: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Gradient of the objective at ``x``: returns (grad, objective (N,), logits)."""
        x = x.detach().requires_grad_(True)
        logits = self.model(x)
        if not self._validated:
            self._validate(logits, x, labels)
        objective = self._objective(logits, labels)
        (grad,) = torch.autograd.grad(objective.sum(), x)
        self._count(index)
        return grad, objective.detach(), logits.detach()

    def _ascent_step(self, x_adv: Tensor, x: Tensor, grad: Tensor, step: float | Tensor) -> Tensor:
        """One projected steepest-ascent step of size ``step`` inside the eps ball and box."""
        assert self.eps is not None
        if isinstance(step, Tensor):
            step = per_example(step, x_adv)
        return clip_to_ball(x_adv + step * normalize(grad, self.norm), x, self.eps, self.norm)

    def _project_budget(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """Project onto the eps ball (no-op when eps is None) and the box."""
        if self.eps is None:
            return x_adv.clamp(0.0, 1.0)
        return clip_to_ball(x_adv, x, self.eps, self.norm)
