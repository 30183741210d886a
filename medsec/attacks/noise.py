"""Random perturbations of a given norm: the baseline an attack must beat.

An attack that lowers a score no more than random noise of the same size shows no real
vulnerability; scorecards report both (e.g. ``dice_noise`` beside ``dice_adv``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from medsec.attacks.base import coarsen, per_example


def random_perturbation(images: Tensor, eps: float, norm: str = "linf", seed: int = 0,
                        region: Tensor | None = None, scale: int = 1) -> Tensor:
    """``images`` (N, C, *S) in [0, 1] plus random noise of size ``eps``, clipped to [0, 1].

    ``linf``: a random sign per pixel times ``eps`` (a random corner of the ball, the
    largest random change the budget allows); ``l2``: a Gaussian direction scaled to L2 norm
    ``eps`` per example. ``region`` (N, *S) bool confines the noise (zero outside it; the L2
    norm is then spent inside the region). ``scale`` > 1 makes the noise constant on blocks
    of ``scale`` pixels per side (:func:`~medsec.attacks.base.coarsen`, as the coarse-scale
    attacks). Deterministic
    for a given ``seed``.
    """
    if norm not in ("linf", "l2"):
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(images.shape, generator=generator, dtype=torch.float32)
    noise = coarsen(noise, scale).to(device=images.device, dtype=images.dtype)
    if region is not None:
        noise = noise * region.to(noise.dtype).unsqueeze(1)
    if norm == "linf":
        delta = eps * noise.sign()
    else:
        length = noise.flatten(1).norm(dim=1).clamp_min(1e-12)
        delta = noise * per_example(eps / length, noise)
    return (images + delta).clamp(0.0, 1.0)
