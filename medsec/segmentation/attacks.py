"""Attacks on segmenters: the project's FGSM/PGD with a dense loss (one implementation each).

:class:`DenseAttackMixin` adapts any :class:`medsec.attacks.base.Attack` to dense labels:
masks (N, *S) instead of labels (N,), logits (N, K, *S) instead of (N, K), the per-example mean
pixel cross-entropy as ``loss_fn``, and an optional ``region`` (N, *S) bool that confines the
perturbation (zero outside it). :class:`SegFGSM` and :class:`SegPGD` are FGSM and PGD with
the mixin. Untargeted attacks maximise the pixel CE against the true masks; targeted attacks
(ASMA-style, Ozbulak et al. 2019) minimise it against a target mask - all background to
erase a lesion, a lesion mask to forge one - inside a small eps ball (the budget plays the role
of ASMA's perturbation penalty). PGD runs without early stopping (final iterate), so that a
targeted attack keeps sharpening the target mask after it first matches.

Example::

    attack = SegPGD(model, eps=8/255, alpha=2/255, steps=20)
    adv = attack(images, masks)                            # untargeted
    erase = SegPGD(model, eps=8/255, targeted=True)
    adv = erase(images, torch.zeros_like(masks), region=masks > 0)  # erase, perturb lesion only
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor, nn

from medsec.attacks.base import Attack, LossFn, coarsen
from medsec.attacks.fgsm import FGSM
from medsec.attacks.pgd import PGD
from medsec.training.devices import model_device


def pixel_cross_entropy(logits: Tensor, masks: Tensor) -> Tensor:
    """Per-example mean pixel cross-entropy (N,) of logits (N, K, *S) against masks (N, *S)."""
    return F.cross_entropy(logits, masks, reduction="none").flatten(1).mean(1)


def dilate_region(masks: Tensor, margin: int) -> Tensor:
    """Region (N, *S) bool: the foreground of ``masks`` grown by ``margin`` pixels/voxels
    (a region 'near the lesion'); ``margin=0`` gives the foreground itself."""
    fg = (masks > 0).cpu().numpy()
    if margin > 0:
        structure = ndimage.generate_binary_structure(fg.ndim - 1, fg.ndim - 1)
        fg = torch.stack([torch.from_numpy(ndimage.binary_dilation(
            m, structure=structure, iterations=margin)) for m in fg]).numpy()
    return torch.from_numpy(fg).to(masks.device)


class DenseAttackMixin(Attack):
    """Dense-label checks, a pixel-CE default loss, region-restricted and coarse-scale
    perturbations.

    Call as ``attack(images, masks, region=None)``: images (N, C, *S) in [0, 1]; masks
    (N, *S) integer class indices (true masks, or target masks when ``targeted``); region
    (N, *S) bool or None (None: perturb everywhere). ``scale`` > 1 (the multi-scale variant)
    restricts the perturbation to blocks of ``scale`` x ``scale`` pixels with one value each
    (low-frequency changes, like a bias field; exact up to the [0, 1] clip; no random start).
    """

    def __init__(self, model: nn.Module, *args, loss_fn: LossFn | None = None,
                 scale: int = 1, **kwargs) -> None:
        super().__init__(model, *args, loss_fn=loss_fn or pixel_cross_entropy, **kwargs)
        if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
            raise ValueError(f"scale must be an integer >= 1, got {scale!r}")
        self.scale = scale
        if scale > 1 and getattr(self, "random_start", False):
            self.random_start = False  # a per-pixel random start is not block-constant
        self._region: Tensor | None = None

    def __call__(self, images: Tensor, labels: Tensor, region: Tensor | None = None) -> Tensor:
        """Adversarial images (same shape as ``images``, in [0, 1], zero change outside
        ``region``)."""
        self._region = None if region is None else self._check_region(region, images)
        try:
            return self._guarded(images, labels, self._perturb_in_region)
        finally:
            self._region = None

    def _check_region(self, region: Tensor, images: Tensor) -> Tensor:
        if not isinstance(region, Tensor) or region.shape != (images.shape[0], *images.shape[2:]):
            shape = tuple(region.shape) if isinstance(region, Tensor) else type(region).__name__
            raise ValueError(f"region must be a bool tensor of shape "
                             f"{(images.shape[0], *images.shape[2:])} (N, *spatial), got {shape}")
        # on the model's device, where _guarded runs the work
        return region.to(device=model_device(self.model), dtype=images.dtype).unsqueeze(1)

    def _confine(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """Zero the perturbation outside the region (no-op without one). Box constraints
        survive: inside the region x_adv is kept, outside x itself is used."""
        if self._region is None or x_adv.shape[0] != x.shape[0]:
            return x_adv
        return x + (x_adv - x) * self._region

    def _perturb_in_region(self, images: Tensor, labels: Tensor,
                           clean_logits: Tensor | None) -> Tensor:
        return self._confine(self._perturb(images, labels, clean_logits), images)

    def _ascent_step(self, x_adv: Tensor, x: Tensor, grad: Tensor, step: float | Tensor) -> Tensor:
        grad = coarsen(grad, self.scale)
        if self._region is not None:
            grad = grad * self._region  # steepest ascent restricted to the region's pixels
        return self._confine(super()._ascent_step(x_adv, x, grad, step), x)

    # ------------------------------------------------------------------ dense contract

    def check_label_shape(self, labels: Tensor, images: Tensor) -> None:
        """Masks: one class index per pixel, shape (N, *spatial)."""
        expected = (images.shape[0], *images.shape[2:])
        if tuple(labels.shape) != expected:
            raise ValueError(f"{type(self).__name__} needs masks of shape {expected} "
                             f"(N, *spatial) matching the images, got {tuple(labels.shape)}")

    def check_output(self, logits: Tensor, images: Tensor) -> int:
        """Dense logits (N, K, *spatial), K >= 2, finite; a classifier is refused."""
        expected = f"(N={images.shape[0]}, K, {', '.join(str(s) for s in images.shape[2:])})"
        if not isinstance(logits, Tensor):
            raise ValueError(f"model must return a tensor of logits, got {type(logits).__name__}")
        if logits.dim() == 2:
            raise ValueError(f"{type(self).__name__} attacks segmentation models: the model "
                             f"returned {tuple(logits.shape)} (one score vector per image, a "
                             f"classifier); expected dense logits {expected}")
        if logits.shape[0] != images.shape[0] or logits.shape[2:] != images.shape[2:]:
            raise ValueError(f"model output must be dense logits {expected}, "
                             f"got {tuple(logits.shape)}")
        if logits.shape[1] < 2:
            raise ValueError(f"model must return >= 2 class logits per pixel, got "
                             f"{logits.shape[1]}")
        if not torch.isfinite(logits).all():
            raise ValueError("model output contains NaN or infinite values")
        return int(logits.shape[1])

    def check_labels(self, labels: Tensor, num_classes: int) -> None:
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise ValueError(f"mask values must lie in [0, {num_classes}) for a model with "
                             f"{num_classes} classes, got {int(labels.min())}..{int(labels.max())}")

    def is_adversarial(self, logits: Tensor, labels: Tensor) -> Tensor:
        """(N,) bool: targeted - every pixel predicted as its target; untargeted - pixel
        accuracy below one half."""
        agree = (logits.argmax(1) == labels).flatten(1).float().mean(1)
        return agree >= 1.0 if self.targeted else agree < 0.5

    def adversarial_margin(self, logits: Tensor, labels: Tensor) -> Tensor:
        """(N,) lower = stronger: the objective's negative (pixel CE to the target when
        targeted, minus the pixel CE to the truth when untargeted)."""
        return -self._objective(logits, labels)


class SegFGSM(DenseAttackMixin, FGSM):
    """FGSM/FGM on a segmenter (dense pixel-CE loss, optional ``scale``); see
    :class:`DenseAttackMixin`."""

    name = "seg_fgsm"


class SegPGD(DenseAttackMixin, PGD):
    """PGD (linf/l2, restarts) on a segmenter; ``early_stop`` defaults to False (a dense
    attack keeps improving after its first success); ``scale`` as in
    :class:`DenseAttackMixin`."""

    name = "seg_pgd"

    def __init__(self, model: nn.Module, eps: float = 8 / 255, alpha: float = 2 / 255,
                 steps: int = 20, norm: str = "linf", random_start: bool = True,
                 restarts: int = 1, early_stop: bool = False, targeted: bool = False,
                 seed: int = 0, loss_fn: LossFn | None = None, scale: int = 1) -> None:
        super().__init__(model, eps=eps, alpha=alpha, steps=steps, norm=norm,
                         random_start=random_start, restarts=restarts, early_stop=early_stop,
                         targeted=targeted, seed=seed, loss_fn=loss_fn, scale=scale)
