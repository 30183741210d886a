"""Sampling from a conditional generator: seeded, batched, class-balanced."""

from __future__ import annotations

import torch
from torch import Tensor

from medsec.deepfakes.networks import ConditionalGenerator
from medsec.models.guard import model_guard


def balanced_labels(n_per_class: int, num_classes: int) -> Tensor:
    """Labels (n_per_class * num_classes,) int64: ``n_per_class`` of each class, in order."""
    if n_per_class < 0 or num_classes < 1:
        raise ValueError(f"need n_per_class >= 0 and num_classes >= 1, got {n_per_class}, "
                         f"{num_classes}")
    return torch.arange(num_classes).repeat_interleave(n_per_class)


@torch.no_grad()
def sample_images(
    generator: ConditionalGenerator, labels: Tensor, seed: int, batch_size: int = 512
) -> Tensor:
    """Images (N, C, H, W) float32 in [0, 1] of the requested ``labels`` (N,).

    The latent vectors come from a private ``torch.Generator`` seeded with ``seed``: the same
    generator weights, labels and seed give the same images, whatever the global RNG state.
    """
    num_classes = generator.arch.num_classes
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes - 1}] for this generator")
    rng = torch.Generator().manual_seed(int(seed))
    z = torch.randn(len(labels), generator.arch.latent_dim, generator=rng)
    with model_guard(generator):
        out = [generator(z[i:i + batch_size], labels[i:i + batch_size].long())
               for i in range(0, len(labels), batch_size)]
    c, h, w = generator.arch.image_shape
    return torch.cat(out) if out else torch.empty(0, c, h, w)


def sample_per_class(
    generator: ConditionalGenerator, n_per_class: int, seed: int
) -> tuple[Tensor, Tensor]:
    """``(images (K*n, C, H, W) in [0, 1], labels (K*n,))`` with ``n_per_class`` per class."""
    labels = balanced_labels(n_per_class, generator.arch.num_classes)
    return sample_images(generator, labels, seed), labels
