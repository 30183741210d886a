"""Tamper regions: boolean masks (N, H, W) saying which pixels a tampering may change.

- :func:`box_mask`: one rectangle; a box (partly) outside the image is a ValueError.
- :func:`lesion_regions`: dilated lesion masks (data with segmentation masks, e.g. phantoms).
- :func:`central_boxes`: random squares inside the central area (chest X-rays: the lungs).
- :func:`check_regions`: validation shared by everything that takes regions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def box_mask(shape: tuple[int, int], top: int, left: int, height: int, width: int) -> Tensor:
    """Boolean mask (H, W) of the box rows [top, top+height), columns [left, left+width)."""
    h, w = shape
    if height < 1 or width < 1:
        raise ValueError(f"tamper region box has size {height}x{width}; it must be >= 1x1")
    if top < 0 or left < 0 or top + height > h or left + width > w:
        raise ValueError(f"tamper region box (top={top}, left={left}, height={height}, "
                         f"width={width}) lies outside the {h}x{w} image")
    mask = torch.zeros(h, w, dtype=torch.bool)
    mask[top:top + height, left:left + width] = True
    return mask


def check_regions(regions: Tensor, images: Tensor) -> Tensor:
    """Validate regions for images (N, C, H, W); returns them as bool (N, H, W).

    Raises ValueError naming the problem: wrong shape, values other than 0/1, empty regions.
    """
    if regions.dim() != 3 or regions.shape[0] != images.shape[0] or \
            tuple(regions.shape[1:]) != tuple(images.shape[2:]):
        raise ValueError("tamper regions must have shape (N, H, W) = "
                         f"{(images.shape[0], *images.shape[2:])} to match the images "
                         f"{tuple(images.shape)}, got {tuple(regions.shape)}")
    if regions.dtype != torch.bool:
        if not torch.all((regions == 0) | (regions == 1)):
            raise ValueError("tamper regions must be binary masks (0/1 or bool)")
        regions = regions.bool()
    empty = (~regions.flatten(1).any(dim=1)).nonzero().flatten()
    if len(empty):
        raise ValueError(f"tamper region of image(s) {empty[:10].tolist()} is empty: nothing to "
                         "tamper")
    return regions


def lesion_regions(masks: Tensor, pixels: int = 1) -> Tensor:
    """Lesion masks (N, H, W) dilated by a (2p+1)-square, bool; rows without a lesion stay
    empty."""
    m = (masks > 0).float().unsqueeze(1)
    if pixels > 0:
        m = F.max_pool2d(m, kernel_size=2 * pixels + 1, stride=1, padding=pixels)
    return m.squeeze(1) > 0


def central_boxes(n: int, shape: tuple[int, int], fraction: float,
                  generator: torch.Generator) -> Tensor:
    """``n`` random square boxes (side ``fraction`` x the smaller image side) whose centres
    lie in the central half of the image; bool (n, H, W)."""
    h, w = shape
    side = max(1, round(fraction * min(h, w)))
    if side > min(h, w):
        raise ValueError(f"box side {side} does not fit a {h}x{w} image")
    out = torch.zeros(n, h, w, dtype=torch.bool)
    lo_y, hi_y = max(0, h // 4 - side // 2), min(h - side, 3 * h // 4 - side // 2)
    lo_x, hi_x = max(0, w // 4 - side // 2), min(w - side, 3 * w // 4 - side // 2)
    tops = torch.randint(lo_y, max(lo_y, hi_y) + 1, (n,), generator=generator)
    lefts = torch.randint(lo_x, max(lo_x, hi_x) + 1, (n,), generator=generator)
    for i, (top, left) in enumerate(zip(tops.tolist(), lefts.tolist(), strict=True)):
        out[i] = box_mask(shape, top, left, side, side)
    return out


def borrow_regions(pool: Tensor, n: int, generator: torch.Generator) -> Tensor:
    """``n`` regions drawn (with replacement) from a pool of non-empty regions (P, H, W)."""
    if len(pool) == 0:
        raise ValueError("no lesion regions to borrow from (no image with a lesion mask)")
    return pool[torch.randint(0, len(pool), (n,), generator=generator)]
