"""Leakage facts for own data: patients, studies and near-duplicate images across splits.

One row per image: ``split``, ``index``, ``patient``, ``study`` (pseudonymous keys),
``phash`` (64-bit perceptual hash, ``imagehash.phash`` of the image's grey mean, hex),
``near_group`` (connected component of images whose hashes differ in at most
``max_distance`` bits), and ``n_splits_patient`` / ``n_splits_study`` / ``n_splits_near``:
how many splits hold that patient, study or near-duplicate group (1 unless it leaks). GX checks
that each is 1 (:func:`medsec.data.validation.checks.leakage_checks`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from medsec.data.types import ImageDataset

_BLOCK = 2048  # rows of the pairwise hash-distance block


def phashes(images: np.ndarray) -> np.ndarray:
    """uint64 perceptual hash (imagehash.phash, 8x8 DCT bits) of every image (N, C, H, W) in
    [0, 1] (channels averaged, quantised to uint8)."""
    import imagehash
    from PIL import Image

    out = np.zeros(len(images), np.uint64)
    for i in range(len(images)):
        grey = np.asarray(images[i], np.float32).mean(axis=0)
        pixels = np.clip(np.rint(np.nan_to_num(grey) * 255), 0, 255).astype(np.uint8)
        bits = imagehash.phash(Image.fromarray(pixels)).hash.reshape(-1)
        out[i] = np.uint64(int("".join("1" if b else "0" for b in bits), 2))
    return out


def _popcount(values: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(values)
    as_bytes = values.view(np.uint8).reshape(*values.shape, 8)
    return np.unpackbits(as_bytes, axis=-1).sum(axis=-1)


def near_groups(hashes: np.ndarray, max_distance: int) -> np.ndarray:
    """Component id (int64 (N,)) of every hash: images linked when their hashes differ in at
    most ``max_distance`` bits (union-find over the pairs; blockwise O(N^2) popcounts)."""
    n = len(hashes)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    if max_distance <= 0:
        _, first = np.unique(hashes, return_inverse=True)
        return first.astype(np.int64)
    for start in range(0, n, _BLOCK):
        block = hashes[start:start + _BLOCK]
        distance = _popcount(block[:, None] ^ hashes[None, :])
        rows, cols = np.nonzero(distance <= max_distance)
        for r, c in zip(rows + start, cols, strict=True):
            if c > r:
                a, b = find(int(r)), find(int(c))
                if a != b:
                    parent[max(a, b)] = min(a, b)
    return np.asarray([find(i) for i in range(n)], np.int64)


def leakage_table(splits: dict[str, ImageDataset], max_distance: int | None) -> pd.DataFrame:
    """The per-image leakage table (see module docstring); ``max_distance`` None skips the
    perceptual hashes (``near_group`` is then the image's own row)."""
    parts = []
    for split, data in splits.items():
        n = len(data)
        none = np.full(n, "", dtype=object)
        parts.append(pd.DataFrame({
            "split": np.full(n, split, dtype=object), "index": np.arange(n, dtype=np.int64),
            "patient": none if data.patient_ids is None else data.patient_ids.astype(object),
            "study": none if data.study_ids is None else data.study_ids.astype(object),
            "phash": (phashes(data.images) if max_distance is not None and n
                      else np.zeros(n, np.uint64))}))
    table = pd.concat(parts, ignore_index=True)
    if max_distance is not None:
        table["near_group"] = near_groups(table["phash"].to_numpy(np.uint64), max_distance)
    else:
        table["near_group"] = np.arange(len(table), dtype=np.int64)
    table["phash"] = [f"{int(h):016x}" for h in table["phash"]]
    for column, key in (("n_splits_patient", "patient"), ("n_splits_study", "study"),
                        ("n_splits_near", "near_group")):
        counts = table.groupby(key)["split"].transform("nunique").astype(np.int64)
        unknown = table[key].astype(str) == ""  # no key: cannot leak by it
        table[column] = np.where(unknown, 1, counts).astype(np.int64)
    return table
