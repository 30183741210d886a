"""Segmentation data: image/mask pairs from the 2D phantoms, 3D phantom volumes, or folders.

Arrays follow the project conventions: images float32 in [0, 1], channels first, shape
(N, C, H, W) or (N, C, D, H, W); masks int64 class indices, shape (N, H, W) or (N, D, H, W),
0 = background, 1 = lesion (more classes allowed in folders).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from monai.data.synthetic import create_test_image_3d

from medsec.data.phantoms import LESION_CONTRAST
from medsec.data.types import ImageDataset, LoadedDataset
from medsec.errors import DataError
from medsec.io import arrays_digest

IMAGE_SUFFIXES = (".png", ".nii", ".nii.gz")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegSplit:
    """One split: ``images`` float32 (N, C, *S) in [0, 1], ``masks`` int64 (N, *S)."""

    images: np.ndarray
    masks: np.ndarray

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def head(self, n: int | None) -> SegSplit:
        """The first ``n`` examples (all when ``n`` is None)."""
        return self if n is None or n >= len(self) else SegSplit(self.images[:n], self.masks[:n])


@dataclass(frozen=True)
class SegData:
    """All splits (``train``, ``val``, ``test``) of a segmentation dataset; ``names`` (folder
    data) holds each split's file names in index order."""

    name: str
    splits: dict[str, SegSplit]
    num_classes: int
    version: str
    names: dict[str, list[str]] | None = None

    @property
    def spatial_dims(self) -> int:
        return int(self.splits["train"].images.ndim - 2)

    @property
    def in_channels(self) -> int:
        return int(self.splits["train"].images.shape[1])


def validation_splits(data: SegData) -> dict[str, ImageDataset]:
    """The splits as :class:`ImageDataset` for the Great Expectations validation: images,
    masks, and label 1 where the mask holds any foreground (0 otherwise)."""
    return {name: ImageDataset(split.images,
                               (split.masks.reshape(len(split), -1) > 0).any(1).astype(np.int64),
                               split.masks)
            for name, split in data.splits.items()}


def check_pair(image: np.ndarray, mask: np.ndarray, where: str = "") -> np.ndarray:
    """Validate one image (C, *S) / mask (*S) pair; return the mask as int64.

    Raises DataError for a shape mismatch, non-integer or negative mask values, or an image
    outside [0, 1].
    """
    tag = f"{where}: " if where else ""
    if tuple(image.shape[1:]) != tuple(mask.shape):
        raise DataError(f"{tag}mask shape {tuple(mask.shape)} does not match image spatial "
                        f"shape {tuple(image.shape[1:])} (image {tuple(image.shape)})")
    if not np.all(np.isfinite(mask)) or not np.array_equal(mask, np.round(mask)):
        raise DataError(f"{tag}mask values must be integer class indices (0 = background), "
                        f"got non-integer values such as {mask[mask != np.round(mask)][:3]}")
    if mask.size and mask.min() < 0:
        raise DataError(f"{tag}mask values must be >= 0, got {mask.min()}")
    if image.size and (image.min() < 0 or image.max() > 1 or not np.all(np.isfinite(image))):
        raise DataError(f"{tag}image values must lie in [0, 1]")
    return mask.astype(np.int64)


def from_loaded(data: LoadedDataset, max_train: int | None = None,
                max_eval: int | None = None) -> SegData:
    """The 2D phantoms (or any LoadedDataset with ``masks``) as segmentation data."""
    splits: dict[str, SegSplit] = {}
    for split, ds in data.splits.items():
        if ds.masks is None:
            raise DataError(f"dataset {data.name!r} has no segmentation masks ({split} split)")
        limit = max_train if split == "train" else max_eval
        splits[split] = SegSplit(ds.images, ds.masks.astype(np.int64)).head(limit)
    num_classes = max(2, int(max(int(s.masks.max()) for s in splits.values())) + 1)
    return SegData(data.name, splits, num_classes, data.version)


def make_phantom_volume(size: int, lesion: bool, rng: np.random.RandomState
                        ) -> tuple[np.ndarray, np.ndarray]:
    """One SYNTHETIC volume: (image float32 (D,H,W) in [0,1], mask uint8 (D,H,W) in {0,1}).

    An ellipsoidal "body" with a smooth intensity, plus (if ``lesion``) 1-2 bright spheres from
    MONAI's ``create_test_image_3d`` (``LESION_CONTRAST`` above the tissue), plus Gaussian noise
    (as the 2D phantoms).
    """
    grid = np.mgrid[0:size, 0:size, 0:size].astype(np.float32) / (size - 1) * 2 - 1
    axes = rng.uniform(0.75, 0.95, size=3)
    body = sum((g / a) ** 2 for g, a in zip(grid, axes, strict=True)) <= 1.0
    image = body * (rng.uniform(0.25, 0.4) + 0.1 * (grid[0] + 1) / 2)
    mask = np.zeros((size,) * 3, np.uint8)
    if lesion:
        _, labels = create_test_image_3d(
            size, size, size, num_objs=int(rng.randint(1, 3)), rad_max=max(3, size // 5),
            rad_min=2, noise_max=0.0, num_seg_classes=1, random_state=rng)
        mask = (labels > 0).astype(np.uint8)
        image = np.where(mask > 0, image + rng.uniform(*LESION_CONTRAST), image)
    image = np.clip(image + rng.normal(0.0, 0.03, size=image.shape), 0.0, 1.0)
    return image.astype(np.float32), mask


def phantom_volumes(n_train: int, n_val: int, n_test: int, size: int = 16,
                    seed: int = 0) -> SegData:
    """Deterministic SYNTHETIC 3D phantom set (half the volumes carry lesions)."""
    splits: dict[str, SegSplit] = {}
    for offset, (split, n) in enumerate((("train", n_train), ("val", n_val), ("test", n_test))):
        rng = np.random.RandomState(seed * 1000 + 500 + offset)
        pairs = [make_phantom_volume(size, bool(i % 2), rng) for i in range(n)]
        splits[split] = SegSplit(
            np.asarray([p[0] for p in pairs], np.float32).reshape(n, 1, size, size, size),
            np.asarray([p[1] for p in pairs], np.int64).reshape(n, size, size, size))
    version = arrays_digest(*(a for s in splits.values() for a in (s.images, s.masks)))
    return SegData("phantoms3d", splits, 2, version)


def _read_nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A NIfTI file as (array float32, affine (4, 4)), reoriented to RAS.

    nibabel's ``as_closest_canonical`` flips/transposes the voxel axes so that they point
    Right, Anterior, Superior, whatever orientation (LAS, LPS, PIS...) the file was stored in;
    the same anatomy therefore gives the same array. A trailing singleton 4th axis
    (X, Y, Z, 1) is dropped; any other 4-D file (time series, multi-channel) is a DataError.
    """
    import nibabel as nib

    img = nib.load(str(path))
    if len(img.shape) > 3:
        img = nib.funcs.squeeze_image(img)
        if len(img.shape) > 3:
            raise DataError(f"{path}: 4-D NIfTI of shape {tuple(img.shape)} is not supported "
                            f"(time series or several channels); save one 3-D volume per file")
    img = nib.as_closest_canonical(img)
    return np.asarray(img.get_fdata(dtype=np.float32)), np.asarray(img.affine, np.float64)


def _read_file(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Raw array of a PNG (H, W[, C]) or NIfTI ((H, W) / (D, H, W) in RAS voxel order, see
    :func:`_read_nifti`) file, with the NIfTI affine (None for PNG)."""
    try:
        if path.name.lower().endswith(".png"):
            from PIL import Image

            with Image.open(path) as img:
                return np.asarray(img), None
        return _read_nifti(path)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 (any reader failure is a data error)
        raise DataError(f"{path}: cannot read image: {exc}") from exc


def _check_same_space(image_affine: np.ndarray | None, mask_affine: np.ndarray | None,
                      where: str) -> None:
    """Image and mask must both be NIfTI (same RAS affine, 0.01 mm tolerance) or both PNG."""
    if (image_affine is None) != (mask_affine is None):
        raise DataError(f"{where}: image and mask must both be NIfTI or both PNG")
    if image_affine is not None and mask_affine is not None and not np.allclose(
            image_affine, mask_affine, rtol=0.0, atol=1e-2):
        raise DataError(f"{where}: image and mask affines differ after reorienting to RAS "
                        f"({np.round(image_affine, 3).tolist()} vs "
                        f"{np.round(mask_affine, 3).tolist()}); save the mask with the "
                        f"image's affine")


def _to_unit(raw: np.ndarray, path: Path) -> np.ndarray:
    """Image to float32 [0, 1]: integers are scaled by their dtype's maximum."""
    if np.issubdtype(raw.dtype, np.integer):
        return (raw.astype(np.float32) / float(np.iinfo(raw.dtype).max)).astype(np.float32)
    raw = raw.astype(np.float32)
    if raw.size and (raw.min() < 0 or raw.max() > 1):
        raise DataError(f"{path}: float image values must lie in [0, 1] "
                        f"(got {raw.min():.4g}..{raw.max():.4g}); rescale before export")
    return raw


def _list(directory: Path) -> dict[str, Path]:
    """The image files of ``directory`` by name without their suffix."""
    return {p.name[: -len(suffix)]: p for p in sorted(directory.iterdir()) if p.is_file()
            for suffix in IMAGE_SUFFIXES if p.name.lower().endswith(suffix)}  # at most one


def read_image_mask_folder(directory: str | Path) -> tuple[SegSplit, list[str]]:
    """Read ``directory/images/*`` and ``directory/masks/*`` (PNG or NIfTI), paired by name.

    Images become (N, 1, *S) float32 in [0, 1] (PNG RGB is averaged to grey); masks (N, *S)
    int64 as stored (label values are checked by :func:`load_segmentation_folder`). NIfTI
    files are reoriented to RAS, image and mask each by its own affine, so both stay aligned
    whatever orientation they were saved in. Raises DataError naming the files for unpaired
    names, a NIfTI/PNG mix, image and mask affines that differ, 4-D NIfTI, shape mismatches,
    non-integer mask values or images of different shapes. Returns the split and the sorted
    pair names.
    """
    root = Path(directory)
    img_dir, mask_dir = root / "images", root / "masks"
    for d in (img_dir, mask_dir):
        if not d.is_dir():
            raise DataError(f"segmentation folder {root} needs images/ and masks/ subfolders "
                            f"({d} is missing)")
    images, masks = _list(img_dir), _list(mask_dir)
    if not images:
        raise DataError(f"{img_dir}: no image files ({', '.join(IMAGE_SUFFIXES)})")
    only_img, only_mask = sorted(set(images) - set(masks)), sorted(set(masks) - set(images))
    if only_img or only_mask:
        raise DataError(f"{root}: unpaired files: images without mask {only_img[:5]}, "
                        f"masks without image {only_mask[:5]}")
    out_images, out_masks = [], []
    for name in sorted(images):
        where = f"{images[name].name} / {masks[name].name}"
        image_raw, image_affine = _read_file(images[name])
        image = _to_unit(image_raw, images[name])
        if image.ndim == 3 and images[name].name.lower().endswith(".png"):
            image = image[..., :3].mean(axis=-1)  # RGB(A) -> grey
        mask_raw, mask_affine = _read_file(masks[name])
        if mask_raw.ndim == 3 and masks[name].name.lower().endswith(".png"):
            mask_raw = mask_raw[..., 0]
        _check_same_space(image_affine, mask_affine, where)
        mask = check_pair(image[None], mask_raw.astype(np.float64), where)
        if out_images and image.shape != out_images[0].shape[1:]:
            raise DataError(f"{images[name]}: shape {image.shape} differs from the first image "
                            f"{out_images[0].shape[1:]}; resample to one shape first")
        out_images.append(image[None].astype(np.float32))
        out_masks.append(mask)
    return SegSplit(np.stack(out_images), np.stack(out_masks)), sorted(images)


def _mask_labels(root: Path, splits: dict[str, SegSplit], names: dict[str, list[str]],
                 num_classes: int | None) -> tuple[dict[str, SegSplit], int]:
    """Check the label values of all masks; returns the splits and the number of classes.

    - A binary label set {0, v} with v > 1 (e.g. masks stored as 0/255) that ``num_classes``
      does not cover is mapped to {0, 1} (a logged warning): 2 classes.
    - Without ``num_classes`` the labels must be 1..K-1 besides background 0, with no gap
      (a gap, e.g. {0, 1, 255}, would make a K=256-class model with NaN metrics): otherwise
      a DataError names a mask file holding an unexpected value and its values. With
      ``num_classes`` values beyond it are left to the Great Expectations validation.
    """
    per_mask = {(s, i): np.unique(m) for s, sp in splits.items() for i, m in enumerate(sp.masks)}
    values = sorted({int(v) for u in per_mask.values() for v in u})
    foreground = [v for v in values if v != 0]
    if (len(foreground) == 1 and foreground[0] > 1
            and (num_classes is None or foreground[0] >= num_classes)):
        v = foreground[0]
        logger.warning("segmentation folder %s: binary masks stored as 0/%d; mapped to 0/1",
                       root.name, v)
        return {s: SegSplit(sp.images, (sp.masks == v).astype(np.int64))
                for s, sp in splits.items()}, 2
    if num_classes is None:
        k = next(c for c in range(1, len(values) + 2) if c not in values)  # first gap
        for (split, i), found in per_mask.items():
            if found.size and int(found.max()) >= k:
                mask_file = _list(root / split / "masks")[names[split][i]]
                raise DataError(
                    f"{mask_file}: mask values {found.tolist()} are not class indices "
                    f"0..{k - 1} (all masks hold {values}); store masks as 0..K-1 (binary "
                    f"0/255 masks are mapped to 0/1) or set segmentation.num_classes")
    return splits, max(2, (values[-1] if values else 0) + 1)


def load_segmentation_folder(root: str | Path, num_classes: int | None = None) -> SegData:
    """A folder with ``train/``, ``val/``, ``test/`` subfolders, each as in
    :func:`read_image_mask_folder`; mask labels checked (and 0/255 masks mapped to 0/1) as in
    :func:`_mask_labels`. ``num_classes``: the declared class count (None: inferred)."""
    root = Path(root)
    read = {s: read_image_mask_folder(root / s) for s in ("train", "val", "test")}
    splits = {s: split for s, (split, _) in read.items()}
    shapes = {s: sp.images.shape[1:] for s, sp in splits.items()}
    if len(set(shapes.values())) != 1:
        raise DataError(f"{root}: splits have different image shapes {shapes}")
    names = {s: names for s, (_, names) in read.items()}
    splits, inferred = _mask_labels(root, splits, names, num_classes)
    version = arrays_digest(*(a for s in splits.values() for a in (s.images, s.masks)))
    return SegData(root.name, splits, inferred, version, names=names)
