"""MedMNIST ``.npz`` files (official format): discovery, integrity checks and loading.

A file holds ``{train,val,test}_images`` (N,H,W) or (N,H,W,3) uint8 and
``{train,val,test}_labels`` (N,1) integers. Loaded images are float32 in [0,1], (N,C,H,W).
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsec.data.types import SPLITS, ImageDataset, LoadedDataset
from medsec.errors import DataError
from medsec.io import file_digest

DATA_DIR_ENV = "MEDSEC_DATA_DIR"


@dataclass(frozen=True)
class MedMNISTInfo:
    """What the MedMNIST v2/v3 release says about one 2D subset (28x28 unless noted)."""

    n_channels: int
    class_names: tuple[str, ...]
    md5: dict[int, str]  # image size -> official md5 of ``<name>[_size].npz``
    multi_label: bool = False


def _info(channels: int, prefix: str, n: int, md5: str | None = None,
          multi_label: bool = False) -> MedMNISTInfo:
    """``n`` classes named ``<prefix>_<k>``; the 28x28 file's official md5 when known."""
    return MedMNISTInfo(channels, tuple(f"{prefix}_{i}" for i in range(n)),
                        {28: md5} if md5 else {}, multi_label)


MEDMNIST_2D: dict[str, MedMNISTInfo] = {
    "pathmnist": _info(3, "tissue", 9, "a8b06965200029087d5bd730944a56c1"),
    "chestmnist": _info(1, "finding", 14, "02c8a6516a18b556561a56cbdd36c4a8", multi_label=True),
    "dermamnist": _info(3, "lesion", 7, "0744692d530f8e62ec473284d019b0c7"),
    "octmnist": MedMNISTInfo(1, ("cnv", "dme", "drusen", "normal"),
                             {28: "c68d92d5b585d8d81f7112f81e2d0842"}),
    "pneumoniamnist": MedMNISTInfo(1, ("normal", "pneumonia"), {
        28: "28209eda62fecd6e6a2d98b1501bb15f", 64: "8f4eceb4ccffa70c672198ea285246c6",
        128: "05b46931834c231683c68f40c47b2971", 224: "d6a3c71de1b945ea11211b03746c1fe1"}),
    "retinamnist": _info(3, "grade", 5, "bd4c0672f1bba3e3a89f0e4e876791e4"),
    "breastmnist": MedMNISTInfo(1, ("malignant", "normal_or_benign"),
                                {28: "750601b1f35ba3300ea97c75c52ff8f6"}),
    "bloodmnist": _info(3, "cell", 8, "7053d0359d879ad8a5505303e11de1dc"),
    "tissuemnist": _info(1, "cell", 8, "ebe78ee8b05294063de985d821c1c34b"),
    "organamnist": _info(1, "organ", 11, "68e3f8846a6bd62f0c9bf841c0d9eacc"),
    "organcmnist": _info(1, "organ", 11),
    "organsmnist": _info(1, "organ", 11),
}


def resolve_data_dir(config_dir: str | Path) -> Path:
    """``$MEDSEC_DATA_DIR`` if set, else the configured directory (relative to the cwd)."""
    return Path(os.environ.get(DATA_DIR_ENV) or config_dir).expanduser()


def medmnist_file_name(name: str, size: int | None = None) -> str:
    """``<name>.npz`` (28 px) or the MedMNIST+ ``<name>_<size>.npz`` (64, 128, 224)."""
    return f"{name}.npz" if size in (None, 28) else f"{name}_{size}.npz"


def find_medmnist_file(name: str, data_dir: str | Path, size: int | None = None) -> Path:
    """Locate ``<name>.npz`` (``<name>_<size>.npz`` for MedMNIST+ sizes); a missing file is an
    error that says where to put it."""
    if name in MEDMNIST_2D and MEDMNIST_2D[name].multi_label:
        raise DataError(f"{name} is a multi-label dataset; MedSec supports single-label tasks")
    directory = resolve_data_dir(data_dir)
    file_name = medmnist_file_name(name, size)
    path = directory / file_name
    if path.is_file():
        return path
    raise DataError(
        f"dataset file not found: {path.resolve()}\n"
        f"  Put the official MedMNIST file '{file_name}' there (download it from "
        f"https://zenodo.org/records/10519652 on a machine with internet), or point "
        f"${DATA_DIR_ENV} / dataset.data_dir at the directory that holds it "
        f"(e.g. MEDSEC_DATA_DIR=../shared/datasets).")


def verification_status(name: str, path: Path, md5: str, size: int) -> str:
    """``verified`` if the md5 is the official one, else ``unverified (...)`` (not an error)."""
    info = MEDMNIST_2D.get(name)
    official = info.md5.get(size) if info else None
    if official is None:
        return "unverified (no official md5 on record for this file)"
    if md5 == official:
        return "verified"
    return f"unverified (md5 {md5} differs from the official {official})"


def _to_float_images(raw: np.ndarray, key: str, path: Path) -> np.ndarray:
    if raw.ndim == 3:
        raw = raw[:, None, :, :]
    elif raw.ndim == 4 and raw.shape[-1] in (1, 3):
        raw = np.transpose(raw, (0, 3, 1, 2))
    else:
        raise DataError(f"{path}: '{key}' has shape {raw.shape}; expected (N,H,W) or (N,H,W,1|3)")
    if raw.dtype == np.uint8:
        return (raw.astype(np.float32) / 255.0).astype(np.float32)
    if np.issubdtype(raw.dtype, np.floating):
        images = raw.astype(np.float32)
        if not np.isfinite(images).all():
            bad = int((~np.isfinite(images)).reshape(len(images), -1).any(1).sum())
            raise DataError(f"{path}: '{key}' contains NaN or inf pixels in {bad} image(s)")
        if images.min() < 0.0 or images.max() > 1.0:
            raise DataError(f"{path}: '{key}' float pixels must lie in [0, 1]; found "
                            f"[{images.min():.3g}, {images.max():.3g}]")
        return images
    raise DataError(f"{path}: '{key}' has dtype {raw.dtype}; expected uint8 or float in [0,1]")


def _to_labels(raw: np.ndarray, key: str, path: Path, n: int, num_classes: int) -> np.ndarray:
    if raw.ndim == 2 and raw.shape[1] != 1:
        raise DataError(
            f"{path}: '{key}' has shape {raw.shape}: multi-label files are not supported")
    labels = raw.reshape(-1)
    if labels.shape[0] != n:
        raise DataError(f"{path}: '{key}' has {labels.shape[0]} labels for {n} images")
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels)):
            raise DataError(f"{path}: '{key}' labels must be integers")
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{path}: '{key}' labels must be in [0, {num_classes - 1}]; found "
                        f"[{labels.min()}, {labels.max()}]")
    return labels


def read_npz_arrays(path: Path) -> dict[str, np.ndarray]:
    """Read every array of an npz, turning corrupt/truncated files into a clear DataError."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npz file (corrupt or truncated?): {exc}") from exc


def load_npz_dataset(path: str | Path, name: str, class_names: tuple[str, ...] | list[str],
                     expected_channels: int | None = None, extra_keys: tuple[str, ...] = ()
                     ) -> tuple[dict[str, ImageDataset], str]:
    """Load MedMNIST-format splits from ``path``; returns (splits, md5 of the file).

    ``extra_keys`` (e.g. ``("masks",)``) are optional per-split integer arrays (N,H,W).
    """
    path = Path(path)
    md5 = file_digest(path)
    arrays = read_npz_arrays(path)
    required = [f"{split}_{kind}" for split in SPLITS for kind in ("images", "labels")]
    missing = [key for key in required if key not in arrays]
    if missing:
        raise DataError(f"{path}: missing key(s) {', '.join(missing)}; a MedMNIST file has "
                        f"{', '.join(required)} (found: {', '.join(sorted(arrays)) or 'none'})")
    splits: dict[str, ImageDataset] = {}
    shape = None
    for split in SPLITS:
        images = _to_float_images(arrays[f"{split}_images"], f"{split}_images", path)
        if expected_channels is not None and images.shape[1] != expected_channels:
            raise DataError(f"{path}: '{split}_images' has {images.shape[1]} channel(s); "
                            f"{name} has {expected_channels}")
        if shape is not None and images.shape[1:] != shape:
            raise DataError(
                f"{path}: '{split}_images' has image shape {images.shape[1:]}, other splits "
                f"{shape}")
        shape = images.shape[1:]
        labels = _to_labels(
            arrays[f"{split}_labels"], f"{split}_labels", path, len(images), len(class_names))
        masks = None
        for key in extra_keys:
            full = f"{split}_{key}"
            if full in arrays:
                masks = arrays[full].astype(np.int64)
                if masks.shape != (len(images), *images.shape[2:]):
                    raise DataError(f"{path}: '{full}' has shape {masks.shape}; expected "
                                    f"{(len(images), *images.shape[2:])}")
        splits[split] = ImageDataset(images, labels, masks)
    return splits, md5


def load_medmnist(name: str, path: str | Path) -> LoadedDataset:
    """Load the MedMNIST 2D subset ``name`` from its ``.npz`` file with integrity checks."""
    info = MEDMNIST_2D[name]
    path = Path(path)
    splits, md5 = load_npz_dataset(path, name, info.class_names, info.n_channels)
    size = int(splits["train"].images.shape[-1])
    return LoadedDataset(name=name, splits=splits, num_classes=len(info.class_names),
                         class_names=list(info.class_names), source_path=str(path), version=md5,
                         verification=verification_status(name, path, md5, size))
