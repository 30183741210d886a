"""Read one DICOM file into float32 frames in [0, 1] (pydicom and its pixel handlers).

The display pipeline of PS3.3 C.11, in order:

1. header checks BEFORE any pixel decoding: the file is DICOM, it has pixel data, and
   ``Rows * Columns * NumberOfFrames * SamplesPerPixel`` is at most ``max_pixels`` (a header
   claiming a 100 000 x 100 000 x 1000 volume is refused without allocating anything);
2. decoding through pydicom's pixel handlers (native, RLE, JPEG via Pillow, ...); a
   compressed transfer syntax without an installed decoder is a :class:`DataError` naming
   the file, the transfer syntax and the packages that would decode it;
3. colour (``SamplesPerPixel == 3``) becomes luma ``0.299 R + 0.587 G + 0.114 B``;
4. the Modality LUT (``pydicom.pixels.apply_modality_lut``: rescale slope/intercept, e.g. CT
   stored values -> Hounsfield units, or a Modality LUT Sequence);
5. the VOI LUT (``pydicom.pixels.apply_voi_lut``: the first window centre/width or the VOI
   LUT Sequence), then scaled from its output range to [0, 1]. Without a VOI the full range
   the header allows (``BitsStored`` and ``PixelRepresentation``, through the Modality LUT) is
   scaled to [0, 1], so the same stored value gives the same intensity in every file of a
   series (no per-image min-max);
6. ``MONOCHROME1`` (white = low values) is inverted: ``1 - x``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medsec.errors import DataError

DEFAULT_MAX_PIXELS = 512 * 512 * 512
"""Default limit of decoded samples per file (134 M samples = 0.5 GiB as float32)."""


def header_pixel_count(ds: object) -> int:
    """``Rows * Columns * NumberOfFrames * SamplesPerPixel`` as the header states them."""
    rows = int(getattr(ds, "Rows", 0) or 0)
    cols = int(getattr(ds, "Columns", 0) or 0)
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    return rows * cols * frames * samples


def _read_header(path: Path):  # -> pydicom.Dataset
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        # defer_size: large values (the pixel data) stay on disk until the pixels are decoded
        return pydicom.dcmread(path, defer_size="1 KB")
    except InvalidDicomError as exc:
        raise DataError(f"{path}: not a DICOM file ({exc})") from None
    except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{path}: unreadable or truncated DICOM header "
                        f"({type(exc).__name__}: {exc})") from None


def check_header(ds: object, path: Path, max_pixels: int) -> None:
    """Raise :class:`DataError` for a file without pixel data or over ``max_pixels``."""
    pixel_keywords = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
    if not any(keyword in ds for keyword in pixel_keywords):  # type: ignore[operator]
        raise DataError(f"{path}: the DICOM file has no pixel data (no image to read)")
    count = header_pixel_count(ds)
    if count <= 0:
        raise DataError(f"{path}: the DICOM header gives no image size (Rows/Columns missing)")
    if count > max_pixels:
        raise DataError(
            f"{path}: the header declares {count:,} samples (Rows x Columns x Frames x "
            f"Samples), over the limit of {max_pixels:,}; raise the max_pixels setting if "
            "this image is genuine")


def _decode(ds, path: Path) -> np.ndarray:
    """The stored values as pydicom's handlers decode them (frames, rows, cols[, samples])."""
    from pydicom.pixels import get_decoder

    tsyntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if tsyntax is not None and tsyntax.is_compressed and "PixelData" in ds:
        try:
            decoder = get_decoder(tsyntax)
        except NotImplementedError:
            raise DataError(f"{path}: no pixel decoder exists in pydicom for transfer syntax "
                            f"{tsyntax.name} ({tsyntax})") from None
        if not decoder.is_available:
            missing = "; ".join(decoder.missing_dependencies) or "a decoder plugin"
            raise DataError(f"{path}: cannot decode {tsyntax.name} ({tsyntax}): no decoder "
                            f"installed; install one of: {missing}")
    try:
        arr = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for corrupt/truncated pixel data
        msg = " ".join(str(exc).split())[:300]
        raise DataError(f"{path}: the pixel data cannot be decoded (truncated or corrupt?): "
                        f"{type(exc).__name__}: {msg}") from None
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    if frames == 1:
        arr = arr[None]
    expected_ndim = 4 if samples > 1 else 3
    if arr.ndim != expected_ndim:
        raise DataError(f"{path}: decoded pixel array has shape {arr.shape}, not what the "
                        f"header states ({frames} frame(s), {samples} sample(s) per pixel)")
    return arr


def _voi_range(ds) -> tuple[float, float] | None:
    """The output range ``(low, high)`` of the VOI transform, or None when there is none."""
    from pydicom.pixels import apply_voi_lut

    if "VOILUTSequence" in ds and len(ds.VOILUTSequence):
        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        return 0.0, float(2**bits - 1)
    if "WindowCenter" in ds and "WindowWidth" in ds:
        # windowing maps everything below/above the window to the ends of its output range
        probe = apply_voi_lut(np.array([-1e300, 1e300]), ds)
        return float(probe[0]), float(probe[1])
    return None


def _stored_range(ds, arr: np.ndarray) -> tuple[float, float]:
    """The range of values the header allows, through the Modality LUT."""
    from pydicom.pixels import apply_modality_lut

    if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:  # no bit depth to go by
        values = apply_modality_lut(arr, ds)
        return float(np.nanmin(values)), float(np.nanmax(values))
    bits = int(getattr(ds, "BitsStored", 16))
    if int(getattr(ds, "PixelRepresentation", 0)) == 0:
        low, high = 0, 2**bits - 1
    else:
        low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    ends = apply_modality_lut(np.array([low, high], dtype=np.int64), ds)
    return float(np.min(ends)), float(np.max(ends))


def to_unit_range(ds, stored: np.ndarray) -> np.ndarray:
    """Stored values (frames, H, W) -> modality LUT -> VOI LUT -> [0, 1] -> MONOCHROME1
    inverted; float32 (frames, H, W)."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    value_range = _stored_range(ds, stored)
    values = apply_modality_lut(stored, ds).astype(np.float64)
    voi = _voi_range(ds)
    if voi is not None:
        values = apply_voi_lut(values, ds).astype(np.float64)
        value_range = voi
    low, high = value_range
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    scaled = np.clip(scaled, 0.0, 1.0)
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        scaled = 1.0 - scaled
    return scaled.astype(np.float32)


def read_dicom(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read the image of the DICOM file ``path``: float32 ``(frames, H, W)`` in [0, 1].

    ``frames`` is 1 for a single-frame image. Colour images become grey (luma, before any
    LUT). Raises :class:`DataError` (one line naming ``path``) for a non-DICOM, truncated or
    pixel-less file, a header over ``max_pixels`` decoded samples (checked before decoding)
    or a compressed transfer syntax with no installed decoder.
    """
    path = Path(path)
    ds = _read_header(path)
    check_header(ds, path, max_pixels)
    stored = _decode(ds, path)
    if stored.ndim == 4:  # (frames, H, W, 3): pydicom converts YBR to RGB by default
        if stored.shape[-1] != 3:
            raise DataError(f"{path}: {stored.shape[-1]} samples per pixel (expected 1 or 3)")
        weights = np.array([0.299, 0.587, 0.114])
        stored = stored.astype(np.float64) @ weights
    return to_unit_range(ds, stored)
