"""Tiny data and models for the DeepFake tests (seconds on one core)."""

from __future__ import annotations

import numpy as np

from medsec.data.types import ImageDataset
from medsec.deepfakes.config import GanConfig
from medsec.deepfakes.networks import GanArch
from tests.unit.attack_fixtures import single_thread  # noqa: F401  (one intra-op thread)

TINY_GAN = GanConfig(latent_dim=8, generator_channels=(16, 8), discriminator_channels=(8, 16),
                     epochs=1, batch_size=16)
TINY_ARCH = GanArch(image_shape=(1, 16, 16), num_classes=2, latent_dim=8,
                    generator_channels=(16, 8), discriminator_channels=(8, 16))


def blob_dataset(n: int = 32, size: int = 16, seed: int = 0) -> ImageDataset:
    """Images (n, 1, size, size) in [0, 1]: grey noise; label 1 adds a bright 4x4 square
    (its mask is the lesion mask)."""
    rng = np.random.RandomState(seed)
    labels = (np.arange(n) % 2).astype(np.int64)
    images = (0.3 + 0.05 * rng.randn(n, 1, size, size)).clip(0, 1).astype(np.float32)
    masks = np.zeros((n, size, size), np.int64)
    for i in np.flatnonzero(labels):
        y, x = rng.randint(2, size - 6, size=2)
        images[i, 0, y:y + 4, x:x + 4] = 0.9
        masks[i, y:y + 4, x:x + 4] = 1
    return ImageDataset(images, labels, masks)
