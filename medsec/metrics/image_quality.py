"""Image-quality metrics in torch: SSIM, PSNR, perturbation norms, total variation.

All functions take float tensors (N, C, H, W) or (N, C, D, H, W) and return (N,) tensors
(:func:`total_variation`: a scalar unless ``per_image``).
:func:`ssim` reproduces ``skimage.metrics.structural_similarity`` (uniform window, sample
covariance, K1 = 0.01, K2 = 0.03, mean over channels), with a window shrunk to fit small
images such as 28x28.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

PSNR_MAX_DB = 100.0
"""PSNR of identical images (instead of infinity), so means stay finite."""


def default_window(spatial: tuple[int, ...], preferred: int = 7) -> int:
    """Largest odd window <= ``preferred`` that fits the smallest spatial side (>= 3)."""
    side = min(spatial)
    win = min(preferred, side if side % 2 else side - 1)
    if win < 3:
        raise ValueError(f"images of spatial shape {spatial} are too small for SSIM (side < 3)")
    return win


def ssim(x: Tensor, y: Tensor, data_range: float = 1.0, win_size: int | None = None) -> Tensor:
    """Mean structural similarity of each pair of images, shape (N,), in [-1, 1]."""
    if x.shape != y.shape or x.dim() not in (4, 5):
        raise ValueError(
            f"ssim needs equal shapes (N,C,H,W) or (N,C,D,H,W), got {x.shape} {y.shape}")
    spatial = tuple(x.shape[2:])
    win = win_size or default_window(spatial)
    if win % 2 == 0 or win > min(spatial):
        raise ValueError(f"win_size must be odd and <= {min(spatial)}, got {win}")
    pool = F.avg_pool2d if x.dim() == 4 else F.avg_pool3d
    x64, y64 = x.double(), y.double()
    stack = torch.cat([x64, y64, x64 * x64, y64 * y64, x64 * y64], dim=1)
    ux, uy, uxx, uyy, uxy = pool(stack, win, stride=1).split(x.shape[1], dim=1)
    npts = win ** len(spatial)
    cov_norm = npts / (npts - 1)
    vx, vy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1).to(x.dtype)


def psnr(x: Tensor, y: Tensor, data_range: float = 1.0) -> Tensor:
    """Peak signal-to-noise ratio in dB, shape (N,); identical images give ``PSNR_MAX_DB``."""
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(1)
    value = 10 * torch.log10(data_range**2 / mse.clamp_min(1e-300))
    return value.clamp(max=PSNR_MAX_DB).to(x.dtype)


def mse(x: Tensor, y: Tensor) -> Tensor:
    """Mean squared error per example, shape (N,)."""
    return (x - y).pow(2).flatten(1).mean(1)


def perturbation_norms(delta: Tensor) -> dict[str, Tensor]:
    """Per-example sizes of ``delta`` (N, C, ...): ``l0`` (changed pixel locations, any
    channel), ``l2`` and ``linf``, each (N,)."""
    changed = (delta != 0).any(dim=1).flatten(1).sum(1).to(delta.dtype)
    flat = delta.flatten(1)
    return {"l0": changed, "l2": flat.norm(dim=1), "linf": flat.abs().amax(dim=1)}


def total_variation(images: Tensor, per_image: bool = False) -> Tensor:
    """Anisotropic total variation of images (N, C, H, W) (or of a change between images):
    absolute differences of vertically plus horizontally neighbouring pixels.

    ``per_image``: their sum over each image, shape (N,); else the mean vertical plus the mean
    horizontal difference over the whole batch, a scalar (the inversion prior's scale).
    """
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs()
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs()
    if per_image:
        return dy.flatten(1).sum(1) + dx.flatten(1).sum(1)
    return dy.mean() + dx.mean()
