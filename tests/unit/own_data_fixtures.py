"""Generated own-data sets for the data-source tests: PNG class folders and manifests.

Every image is distinct at low frequency (a random 4x4 pattern, upsampled), so perceptual
hashes of different images differ; class ``lesion`` images carry a bright disc.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("lesion", "normal")


def make_image(rng: np.random.Generator, size: int, lesion: bool, bits: int = 8) -> np.ndarray:
    """(size, size) uint8 or uint16 image: a smooth random pattern (+ a bright disc)."""
    coarse = rng.random((4, 4))
    image = np.kron(coarse, np.ones((size // 4 + 1, size // 4 + 1)))[:size, :size] * 0.5
    if lesion:
        yy, xx = np.mgrid[:size, :size]
        cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
        image = np.where((yy - cy) ** 2 + (xx - cx) ** 2 < (size // 6) ** 2, 0.95, image)
    top = 255 if bits == 8 else 65535
    return np.round(image * top).astype(np.uint8 if bits == 8 else np.uint16)


def make_folder_dataset(root: Path, n_patients: int = 6, per_patient: int = 3, size: int = 48,
                        seed: int = 0) -> Path:
    """``root/<class>/<patient>/<k>.png``: ``n_patients`` per class, ``per_patient`` images
    each (8-bit grey PNG); returns ``root``."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(CLASSES):
        for p in range(n_patients):
            folder = root / name / f"{name}-patient{p:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(per_patient):
                Image.fromarray(make_image(rng, size, label == 0)).save(folder / f"{k}.png")
    return root


def make_manifest(root: Path, rows: list[dict[str, str]], name: str = "manifest.csv") -> Path:
    """Write ``rows`` (dicts with the manifest columns) as ``root/name`` (CSV)."""
    root.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with open(root / name, "w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(rows)
    return root / name


def manifest_dataset(root: Path, n_patients: int = 6, per_patient: int = 2, size: int = 40,
                     seed: int = 1, sites: int = 2) -> list[dict[str, str]]:
    """PNG files under ``root/img/`` and their manifest rows (path, label, patient_id,
    study_id, site)."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for p in range(n_patients * len(CLASSES)):
        label = CLASSES[p % len(CLASSES)]
        for k in range(per_patient):
            rel = f"img/p{p:02d}_{k}.png"
            Image.fromarray(make_image(rng, size, label == "lesion")).save(root / rel)
            rows.append({"path": rel, "label": label, "patient_id": f"MRN{p:04d}",
                         "study_id": f"ACC{p:04d}{k}", "site": f"hospital{p % sites}"})
    return rows
