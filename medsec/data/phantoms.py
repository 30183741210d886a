"""The built-in SYNTHETIC phantom dataset (no patient data; generated deterministically).

Each image is a smooth "tissue" background inside an elliptical body outline, with
Rician-like noise. Label 1 ("lesion") images carry 1-3 bright lesion-like blobs (made with
MONAI's ``create_test_image_2d``); label 0 ("no_lesion") images have none but may hold a
faint large-scale structure. Every image has a segmentation mask (1 = lesion pixel).
Stored in MedMNIST format plus ``{split}_masks``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from monai.data.synthetic import create_test_image_2d

from medsec.data.medmnist import load_npz_dataset
from medsec.data.types import LoadedDataset
from medsec.io import save_npz_deterministic

PHANTOM_NAME = "phantoms"
PHANTOM_CLASSES = ("no_lesion", "lesion")
PHANTOM_FILE = "phantoms.npz"
LESION_CONTRAST = (0.35, 0.55)
"""Default range of the lesions' brightness above the tissue (pixel units, [0, 1] scale)."""


@dataclass(frozen=True)
class PhantomSpec:
    """What to generate: images per split, side length in pixels, seed (the ``phantoms``
    config section)."""

    n_train: int = 800
    n_val: int = 200
    n_test: int = 200
    size: int = 32
    seed: int = 0

    def write(self, path: str | Path) -> Path:
        """:func:`write_phantoms` with these settings (same settings, same bytes)."""
        return write_phantoms(path, self.n_train, self.n_val, self.n_test, self.size, self.seed)


def _background(size: int, rng: np.random.RandomState) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1) * 2 - 1
    ay, ax = rng.uniform(0.75, 0.95, size=2)
    body = ((yy / ay) ** 2 + (xx / ax) ** 2) <= 1.0
    coarse = rng.rand(4, 4).astype(np.float32)
    texture = np.kron(coarse, np.ones((size // 4 + 1, size // 4 + 1), np.float32))[:size, :size]
    texture = 0.5 * texture + 0.5 * np.roll(texture, (size // 8, size // 8), axis=(0, 1))
    return (body * (rng.uniform(0.25, 0.4) + 0.15 * texture)).astype(np.float32)


def make_phantom(size: int, lesion: bool, rng: np.random.RandomState,
                 contrast: tuple[float, float] = LESION_CONTRAST) -> tuple[np.ndarray, ...]:
    """One phantom: (image float32 (H,W) in [0,1], mask uint8 (H,W) in {0,1}); the lesions
    are brighter than the tissue by a value drawn from ``contrast``."""
    image = _background(size, rng)
    mask = np.zeros((size, size), np.uint8)
    if lesion:
        n_obj = int(rng.randint(1, 4))
        _, labels = create_test_image_2d(
            size, size, num_objs=n_obj, rad_max=max(3, size // 7), rad_min=max(2, size // 14),
            noise_max=0.0, num_seg_classes=1, random_state=rng)
        mask = (labels > 0).astype(np.uint8)
        image = np.where(mask > 0, image + rng.uniform(*contrast), image)
    noise = rng.normal(0.0, 0.03, size=(size, size)).astype(np.float32)
    return np.clip(image + noise, 0.0, 1.0).astype(np.float32), mask


def generate_phantom_arrays(n_train: int, n_val: int, n_test: int, size: int, seed: int,
                            contrast: tuple[float, float] = LESION_CONTRAST
                            ) -> dict[str, np.ndarray]:
    """All splits as MedMNIST-style arrays: images uint8 (N,H,W), labels (N,1), masks (N,H,W).
    ``contrast`` is the lesion brightness range (see :func:`make_phantom`)."""
    lo, hi = contrast
    if not 0.0 < lo <= hi <= 1.0:
        raise ValueError(f"lesion contrast must satisfy 0 < low <= high <= 1, got {contrast}")
    arrays: dict[str, np.ndarray] = {}
    for offset, (split, n) in enumerate((("train", n_train), ("val", n_val), ("test", n_test))):
        rng = np.random.RandomState(seed * 1000 + offset)
        labels = np.arange(n) % 2
        rng.shuffle(labels)
        images = np.zeros((n, size, size), np.uint8)
        masks = np.zeros((n, size, size), np.uint8)
        for i, label in enumerate(labels):
            image, mask = make_phantom(size, bool(label), rng, contrast)
            images[i] = np.round(image * 255).astype(np.uint8)
            masks[i] = mask
        arrays[f"{split}_images"] = images
        arrays[f"{split}_labels"] = labels.astype(np.uint8).reshape(-1, 1)
        arrays[f"{split}_masks"] = masks
    return arrays


def write_phantoms(
    path: str | Path, n_train: int, n_val: int, n_test: int, size: int, seed: int
) -> Path:
    """Generate the phantom file; the same arguments always give the same bytes (md5)."""
    arrays = generate_phantom_arrays(n_train, n_val, n_test, size, seed)
    return save_npz_deterministic(path, arrays)


def load_phantoms(path: str | Path) -> LoadedDataset:
    splits, md5 = load_npz_dataset(path, PHANTOM_NAME, PHANTOM_CLASSES, 1, ("masks",))
    return LoadedDataset(name=PHANTOM_NAME, splits=splits, num_classes=len(PHANTOM_CLASSES),
                         class_names=list(PHANTOM_CLASSES), source_path=str(path), version=md5,
                         verification="synthetic (generated by MedSec; not patient data)",
                         synthetic=True)
