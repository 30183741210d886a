"""The DeepFake dataset: synthetic images in MedMNIST format plus a metadata JSON.

``fakes.npz`` holds ``{train,val,test}_images`` uint8 (N, H, W) (or (N, H, W, 3)) and
``{train,val,test}_labels`` (N, 1): ``n_per_class`` images per class in ``train`` and a quarter
of that (at least 1) in ``val`` and ``test``, each split from its own seed. It loads with
:func:`load_fake_dataset` (MedSec's MedMNIST reader). The bytes depend only on the generator
weights and seeds (deterministic npz), so DVC versions it exactly; ``metadata.json`` records
the generator, its seeds and the checkpoint's sha256. Every image is SYNTHETIC.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medsec.data.medmnist import load_npz_dataset
from medsec.data.types import SPLITS, ImageDataset
from medsec.deepfakes.networks import ConditionalGenerator
from medsec.deepfakes.sampling import sample_per_class
from medsec.io import file_digest, save_npz_deterministic, write_json

FAKES_FILE = "fakes.npz"
METADATA_FILE = "metadata.json"


def split_sizes(n_per_class: int) -> dict[str, int]:
    """Images per class in each split: ``n_per_class`` for train, a quarter for val/test."""
    small = max(1, n_per_class // 4)
    return {"train": n_per_class, "val": small, "test": small}


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Images (N, C, H, W) in [0, 1] -> MedMNIST layout uint8 (N, H, W) or (N, H, W, C)."""
    out = np.round(np.clip(images, 0.0, 1.0) * 255).astype(np.uint8)
    return out[:, 0] if out.shape[1] == 1 else np.transpose(out, (0, 2, 3, 1))


def fake_arrays(generator: ConditionalGenerator, n_per_class: int, seed: int
                ) -> dict[str, np.ndarray]:
    """MedMNIST-style arrays of every split (split i sampled with seed ``seed + i``)."""
    arrays: dict[str, np.ndarray] = {}
    for offset, (split, n) in enumerate(split_sizes(n_per_class).items()):
        images, labels = sample_per_class(generator, n, seed + offset)
        arrays[f"{split}_images"] = to_uint8(images.numpy())
        arrays[f"{split}_labels"] = labels.numpy().astype(np.uint8).reshape(-1, 1)
    return arrays


def arrays_to_splits(arrays: dict[str, np.ndarray]) -> dict[str, ImageDataset]:
    """MedMNIST-style arrays -> splits of float32 images (N, C, H, W) in [0, 1], labels (N,)."""
    splits = {}
    for split in SPLITS:
        raw = arrays[f"{split}_images"]
        images = raw[:, None] if raw.ndim == 3 else np.transpose(raw, (0, 3, 1, 2))
        splits[split] = ImageDataset((images.astype(np.float32) / 255.0).astype(np.float32),
                                     arrays[f"{split}_labels"].reshape(-1).astype(np.int64))
    return splits


def fake_splits(generator: ConditionalGenerator, n_per_class: int, seed: int
                ) -> dict[str, ImageDataset]:
    """The splits :func:`write_fake_dataset` would write (same seeds, same uint8 rounding),
    in memory."""
    return arrays_to_splits(fake_arrays(generator, n_per_class, seed))


def write_fake_dataset(
    directory: str | Path, generator: ConditionalGenerator, checkpoint: str | Path,
    meta: dict[str, Any], n_per_class: int, seed: int,
) -> tuple[Path, Path]:
    """Write ``fakes.npz`` and ``metadata.json`` into ``directory``; returns both paths.

    ``meta`` (plain types) should say which generator and data: it is stored with the
    sample seed, split sizes, the checkpoint file name and sha256 and the npz md5.
    """
    directory = Path(directory)
    npz = save_npz_deterministic(directory / FAKES_FILE, fake_arrays(generator, n_per_class,
                                                                     seed))
    sizes = split_sizes(n_per_class)
    num_classes = generator.arch.num_classes
    info = {
        **meta, "synthetic": True,
        "note": "SYNTHETIC images sampled from a generator by MedSec; not patient data",
        "sample_seed": seed, "n_per_class": {split: n for split, n in sizes.items()},
        "n_images": {split: n * num_classes for split, n in sizes.items()},
        "checkpoint": Path(checkpoint).name, "checkpoint_sha256": file_digest(checkpoint, "sha256"),
        "npz_md5": file_digest(npz),
    }
    return npz, write_json(directory / METADATA_FILE, info)


def load_fake_dataset(path: str | Path, class_names: list[str]) -> dict[str, ImageDataset]:
    """All splits of a ``fakes.npz`` (images float32 [0, 1] (N, C, H, W), labels (N,))."""
    splits, _ = load_npz_dataset(path, "deepfakes", tuple(class_names))
    assert set(splits) == set(SPLITS)
    return splits
