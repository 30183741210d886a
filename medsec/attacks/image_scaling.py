"""Image-scaling attack (Xiao et al. 2019; Quiring et al. 2020).

A large source image is perturbed minimally so that *downscaling* it yields a chosen small
target image: a pipeline that resizes before classifying sees the target, a person looking
at the large image sees the source. Downscaling with ``torch.nn.functional.interpolate``
(nearest, bilinear, bicubic, area; optional antialias) is linear and separable,
``down(X) = L_h X L_w^T`` per channel; the attack computes the projection of the source onto
``{X : L_h X L_w^T = T} ∩ [0, 1]`` (the minimal-L2 perturbation) with Dykstra's alternating
projections, the affine step being the least-squares correction through the pseudo-inverses.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medsec.attacks.base import check_positive
from medsec.metrics.image_quality import mse, perturbation_norms, ssim

MODES = ("nearest", "bilinear", "bicubic", "area")


def _size2(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def resize(
    images: Tensor, size: int | tuple[int, int], mode: str, antialias: bool = False
) -> Tensor:
    """``F.interpolate`` with the settings shared by the attack and :class:`ResizeThenClassify`."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
    align = False if mode in ("bilinear", "bicubic") else None
    aa = antialias if mode in ("bilinear", "bicubic") else False
    return F.interpolate(images, size=_size2(size), mode=mode, align_corners=align, antialias=aa)


@cache
def scaling_matrix(in_size: int, out_size: int, mode: str, antialias: bool = False) -> Tensor:
    """The 1-D resizing operator (out_size, in_size), float64, read off ``resize`` of a basis."""
    basis = torch.eye(in_size, dtype=torch.float64).view(in_size, 1, in_size, 1)
    return resize(basis, (out_size, 1), mode, antialias).view(in_size, out_size).T.contiguous()


class ResizeThenClassify(nn.Module):
    """A preprocessing pipeline: resize images to ``size`` with ``mode``, then classify."""

    def __init__(
        self,
        model: nn.Module,
        size: int | tuple[int, int],
        mode: str = "bilinear",
        antialias: bool = False,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
        self.model, self.size, self.mode, self.antialias = model, _size2(size), mode, antialias

    def forward(self, x: Tensor) -> Tensor:
        return self.model(resize(x, self.size, self.mode, self.antialias))


@dataclass
class ScalingResult:
    """Output of :class:`ImageScalingAttack`; every per-example tensor has shape (N,)."""

    adv: Tensor  # (N, C, H, W) attack images in [0, 1]
    delta_l2: Tensor
    delta_linf: Tensor
    ssim_source: Tensor  # SSIM(attack image, source)
    mse_target: Tensor  # MSE(downscale(attack image), target)
    iterations: int

    def as_dict(self) -> dict[str, float]:
        """Means over the batch, lower_snake_case."""
        return {
            "mean_delta_l2": float(self.delta_l2.mean()),
            "max_delta_linf": float(self.delta_linf.max()),
            "mean_ssim_source": float(self.ssim_source.mean()),
            "mean_mse_target": float(self.mse_target.mean()),
            "iterations": float(self.iterations),
        }


class ImageScalingAttack:
    """Find ``adv = source + delta`` in [0, 1] with ``down(adv) ~= target`` and small ``delta``.

    Args:
        size: the small size (h, w) the pipeline downscales to.
        mode: ``interpolate`` mode of the pipeline (``area`` is the robust choice: every
            source pixel counts, so hiding the target needs a visible perturbation).
        antialias: the pipeline's antialias flag (bilinear/bicubic).
        steps: maximum Dykstra iterations. tol: stop when max |down(adv) - target| < tol.

    Call: ``attack(source (N, C, H, W), target (N, C, h, w)) -> ScalingResult``.
    """

    def __init__(
        self,
        size: int | tuple[int, int] = 28,
        mode: str = "bilinear",
        antialias: bool = False,
        steps: int = 500,
        tol: float = 1e-4,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}, got {mode!r}")
        self.size, self.mode, self.antialias = _size2(size), mode, antialias
        self.steps = check_positive("steps", steps, integer=True)
        self.tol = float(check_positive("tol", tol))

    def downscale(self, images: Tensor) -> Tensor:
        """The pipeline's resize of (N, C, H, W) images to ``size``."""
        return resize(images, self.size, self.mode, self.antialias)

    def operators(self, h: int, w: int) -> tuple[Tensor, Tensor]:
        """(L_h (h', h), L_w (w', w)) float64 with ``down(X) = L_h X L_w^T``; checked."""
        lh = scaling_matrix(h, self.size[0], self.mode, self.antialias)
        lw = scaling_matrix(w, self.size[1], self.mode, self.antialias)
        probe = torch.rand(
            1, 1, h, w, generator=torch.Generator().manual_seed(0), dtype=torch.float64
        )
        if not torch.allclose(lh @ probe[0, 0] @ lw.T, self.downscale(probe)[0, 0], atol=1e-8):
            raise ValueError(f"resize mode {self.mode!r} is not separable-linear at this size")
        return lh, lw

    def __call__(self, source: Tensor, target: Tensor) -> ScalingResult:
        if source.dim() != 4 or target.dim() != 4 or source.shape[:2] != target.shape[:2]:
            raise ValueError(
                f"source (N,C,H,W) and target (N,C,h,w) must share N and C, "
                f"got {tuple(source.shape)} and {tuple(target.shape)}"
            )
        if tuple(target.shape[2:]) != self.size:
            raise ValueError(f"target must be {self.size}, got {tuple(target.shape[2:])}")
        for name, t in (("source", source), ("target", target)):
            if not torch.isfinite(t).all() or float(t.min()) < 0 or float(t.max()) > 1:
                raise ValueError(f"{name} must be finite and lie in [0, 1]")
        h, w = source.shape[2:]
        if h <= self.size[0] or w <= self.size[1]:
            raise ValueError(f"source {h}x{w} must be larger than the target size {self.size}")
        lh, lw = self.operators(h, w)
        lh_pinv, lw_pinv = torch.linalg.pinv(lh), torch.linalg.pinv(lw)
        s, t = source.double(), target.double()

        def to_affine(x: Tensor) -> Tensor:  # least-squares correction onto down(x) = t
            return x - lh_pinv @ (lh @ x @ lw.T - t) @ lw_pinv.T

        x, q = s.clone(), torch.zeros_like(s)
        steps = 0
        for steps in range(1, self.steps + 1):  # noqa: B007 (reported)
            y = to_affine(x)  # affine set: no Dykstra correction needed
            x = (y + q).clamp(0.0, 1.0)
            q = y + q - x
            if float((lh @ x @ lw.T - t).abs().max()) < self.tol:
                break
        adv = x.to(source.dtype)
        norms = perturbation_norms(adv - source)
        return ScalingResult(
            adv=adv,
            delta_l2=norms["l2"],
            delta_linf=norms["linf"],
            ssim_source=ssim(adv, source),
            mse_target=mse(self.downscale(adv), target),
            iterations=steps,
        )
