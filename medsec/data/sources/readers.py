"""One image file -> float32 (C, S, S) in [0, 1], with MONAI dictionary transforms.

Per format, the header is read first and the pixel count checked against ``max_pixels``
BEFORE any pixel is decoded (a hostile header cannot make MedSec allocate hundreds of GB):

- PNG / JPEG (8- or 16-bit; grey, RGB, palette): ``LoadImaged`` (PIL reader, rows first).
  Alpha is DROPPED (RGBA -> RGB, LA -> L): documented handling, not an error. Intensities are
  divided by the type's maximum (255 or 65535).
- NIfTI (``.nii``, ``.nii.gz``): ``LoadImaged`` (nibabel) + ``Orientationd("RAS")`` so every
  volume is read in the same anatomical frame; a 3-D volume gives its middle axial slice
  (documented); 4-D or higher is an error naming the file. Intensities: per-image min-max (or
  the configured window).
- DICOM (``.dcm``): the DICOM reader of :mod:`medsec.data.dicom` (rescale, VOI LUT,
  MONOCHROME1; returns frames in [0, 1]); a multi-frame file gives its middle frame.

Then ``EnsureChannelFirstd``, the intensity step (``ScaleIntensityd`` min-max or
``ScaleIntensityRanged`` window, clipped), channel conversion (grey -> RGB repeats; RGB ->
grey is the ITU-R 601 luma) and ``Resized`` to (S, S) (bilinear, antialiased when
shrinking): mixed sizes and channel counts are converted, not refused. NaN/inf pixels,
truncated or undecodable files are errors naming the file.
"""

from __future__ import annotations

import contextlib
import functools
import io
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from medsec.data.sources.records import Record
from medsec.errors import DataError

Intensity = Literal["auto", "minmax", "window"]
LUMA = np.asarray([0.299, 0.587, 0.114], np.float32)


@dataclass(frozen=True)
class ReadSettings:
    """How every file is turned into a (channels, size, size) float32 image in [0, 1]."""

    image_size: int = 224
    channels: int = 1
    intensity: Intensity = "auto"
    window: tuple[float, float] | None = None
    max_pixels: int = 100_000_000


def _pil_header(record: Record, settings: ReadSettings) -> float:
    """Check a PNG/JPEG header (size, mode) without decoding; the intensity scale (type max)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our limit below
            with Image.open(record.file) as image:
                width, height = image.size
                mode = image.mode
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad files
        raise DataError(f"{record.path}: not a readable image ({exc})") from None
    _check_pixels(record, width * height, f"{width}x{height}", settings)
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        return 65535.0
    if mode in ("F",):
        return 1.0
    return 255.0


def _pil_converter(image: Any) -> Any:
    """Alpha dropped (RGBA -> RGB, LA -> L), palette/CMYK -> RGB; 16-bit and grey unchanged."""
    if image.mode in ("RGBA", "P", "CMYK", "YCbCr", "PA"):
        return image.convert("RGB")
    if image.mode == "LA":
        return image.convert("L")
    if image.mode == "1":
        return image.convert("L")
    return image


def _check_pixels(record: Record, n: int, shape: str, settings: ReadSettings) -> None:
    if n > settings.max_pixels:
        raise DataError(f"{record.path}: {shape} = {n} pixels exceeds dataset.max_pixels "
                        f"{settings.max_pixels} (checked from the header, nothing decoded)")


def _nifti_header(record: Record, settings: ReadSettings) -> None:
    import nibabel as nib

    try:
        header = nib.load(str(record.file)).header
        shape = tuple(int(s) for s in header.get_data_shape())
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{record.path}: not a readable NIfTI file ({exc})") from None
    if len(shape) > 3 and any(s > 1 for s in shape[3:]):
        raise DataError(f"{record.path}: 4-D NIfTI (shape {shape}) is not supported; give one "
                        "3-D volume or 2-D image per file")
    _check_pixels(record, int(np.prod(shape)), "x".join(map(str, shape)), settings)


@functools.lru_cache(maxsize=4)
def _monai_loader(kind: str) -> Any:
    """The (cached) ``LoadImaged`` + ``EnsureChannelFirstd`` (+ ``Orientationd`` RAS for
    ``nifti``) pipeline of one file kind (``pil`` or ``nifti``): {"image": path} -> (C, ...)."""
    from monai.data import NibabelReader, PILReader
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Orientationd

    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        reader = (PILReader(converter=_pil_converter, reverse_indexing=False) if kind == "pil"
                  else NibabelReader())
        steps: list[Any] = [LoadImaged("image", reader=reader, image_only=True),
                            EnsureChannelFirstd("image")]
        if kind == "nifti":
            steps.append(Orientationd("image", axcodes="RAS"))
        return Compose(steps)


def _load_monai(record: Record, kind: str) -> np.ndarray:
    """Run :func:`_monai_loader` on ``record``: float32 (C, *spatial); errors name the file."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            out = _monai_loader(kind)({"image": str(record.file)})["image"]
        except Exception as exc:  # noqa: BLE001 - MONAI wraps the reader's error
            cause = exc
            while cause.__cause__ is not None:
                cause = cause.__cause__
            raise DataError(f"{record.path}: cannot decode ({type(cause).__name__}: "
                            f"{str(cause).splitlines()[0] if str(cause) else ''}; truncated "
                            "or corrupt?)") from None
    return np.asarray(out, dtype=np.float32)


def _load_dicom(record: Record, settings: ReadSettings) -> np.ndarray:
    from medsec.data.dicom import read_dicom  # issue 15B's reader (rescale, VOI LUT, ...)

    frames = np.asarray(read_dicom(record.file, settings.max_pixels), np.float32)
    if frames.ndim == 2:
        frames = frames[None]
    return frames[len(frames) // 2][None]  # (1, H, W): the middle frame


def load_raw(record: Record, settings: ReadSettings) -> tuple[np.ndarray, float | None]:
    """The file as float32 (C, H, W) and its fixed intensity scale (type max; None: min-max)."""
    suffix = record.suffix
    if suffix in (".png", ".jpg", ".jpeg"):
        scale = _pil_header(record, settings)
        return _load_monai(record, "pil"), scale
    if suffix in (".nii", ".nii.gz"):
        _nifti_header(record, settings)
        volume = _load_monai(record, "nifti")  # (C, X, Y[, Z]) in RAS
        if volume.ndim == 4:
            volume = volume[..., volume.shape[-1] // 2]  # the middle axial slice
        return volume, None
    if suffix == ".dcm":
        return _load_dicom(record, settings), 1.0
    raise DataError(f"{record.path}: unsupported file type {suffix!r}")


def _channels(image: np.ndarray, channels: int) -> np.ndarray:
    if image.shape[0] == channels:
        return image
    if channels == 3 and image.shape[0] == 1:
        return np.repeat(image, 3, axis=0)
    if channels == 1 and image.shape[0] == 3:
        return np.tensordot(LUMA, image, axes=1)[None].astype(np.float32)
    if channels == 1:  # other counts (2, 4+ planes): their mean
        return image.mean(axis=0, keepdims=True)
    return np.repeat(image.mean(axis=0, keepdims=True), channels, axis=0)


@functools.lru_cache(maxsize=8)
def _array_transform(name: str, *args: Any) -> Any:
    """Cached MONAI dictionary transforms on key ``image``: ``window`` (low, high),
    ``minmax``, ``resize`` (size) (bilinear, antialiased when shrinking)."""
    from monai.transforms import Resized, ScaleIntensityd, ScaleIntensityRanged

    if name == "window":
        low, high = args
        return ScaleIntensityRanged("image", a_min=low, a_max=high, b_min=0.0, b_max=1.0,
                                    clip=True)
    if name == "minmax":
        return ScaleIntensityd("image", minv=0.0, maxv=1.0)
    return Resized("image", (args[0], args[0]), mode="bilinear", anti_aliasing=True)


def _apply(name: str, image: np.ndarray, *args: Any) -> np.ndarray:
    """:func:`_array_transform` on a plain array, without MONAI's metadata tracking (the
    loaded image's metadata is no longer needed: this is 2-3x faster)."""
    from monai.data import get_track_meta, set_track_meta

    tracking = get_track_meta()
    set_track_meta(False)
    try:
        out = _array_transform(name, *args)({"image": image})["image"]
    finally:
        set_track_meta(tracking)
    return np.asarray(out, np.float32)


def load_image(record: Record, settings: ReadSettings) -> np.ndarray:
    """``record``'s image as float32 (channels, size, size) in [0, 1] (see module docstring)."""
    image, scale = load_raw(record, settings)
    if not np.isfinite(image).all():
        bad = int((~np.isfinite(image)).sum())
        raise DataError(f"{record.path}: {bad} NaN/inf pixel value(s)")
    if settings.intensity == "window" and settings.window is not None:
        image = _apply("window", image, *settings.window)
    elif settings.intensity == "minmax" or scale is None:
        image = _apply("minmax", image)
    else:
        image = image / np.float32(scale)
    image = _channels(np.clip(image, 0.0, 1.0), settings.channels)
    if image.shape[1:] != (settings.image_size, settings.image_size):
        image = _apply("resize", image, settings.image_size)
    return np.clip(image, 0.0, 1.0).astype(np.float32)
