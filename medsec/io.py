"""Atomic file writes: outputs appear complete or not at all."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it into place only on success."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary directory next to ``path``; on success it replaces ``path``
    (whose old contents go), on failure it is removed and ``path`` stays as it was."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old",
                                        dir=target.parent))
            os.replace(target, old / target.name)
            os.replace(tmp, target)
            shutil.rmtree(old)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_atomic(path: str | Path, writer: Callable[[Path], Any]) -> Path:
    """Call ``writer(tmp_path)`` and move the result to ``path`` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def json_safe(data: Any, where: str = "") -> tuple[Any, dict[str, str]]:
    """``data`` with numpy values as Python ones and every NaN/Infinity replaced by None, and
    the reasons, e.g. ``{"a.b[2]": "NaN: undefined for this data"}`` (strict JSON has no NaN
    or Infinity literals)."""
    if isinstance(data, dict):
        out, reasons = {}, {}
        for key, value in data.items():
            out[key], sub = json_safe(value, f"{where}.{key}" if where else str(key))
            reasons |= sub
        return out, reasons
    if isinstance(data, list | tuple | np.ndarray):
        pairs = [json_safe(v, f"{where}[{i}]") for i, v in enumerate(data)]
        return [v for v, _ in pairs], {k: r for _, sub in pairs for k, r in sub.items()}
    if isinstance(data, np.generic):
        data = data.item()
    if isinstance(data, float) and not math.isfinite(data):
        kind = "NaN" if math.isnan(data) else f"{data:+}".replace("inf", "Infinity")
        return None, {where: f"{kind}: undefined for this data"}
    return data, {}


def write_json(path: str | Path, data: Any) -> Path:
    """Strict JSON, atomically: NaN/Infinity become null, listed under ``null_reasons``."""
    clean, reasons = json_safe(data)
    if reasons and isinstance(clean, dict):
        clean["null_reasons"] = reasons
    text = json.dumps(clean, indent=2, sort_keys=True, default=_json_default,
                      allow_nan=False) + "\n"
    return write_atomic(path, lambda tmp: tmp.write_text(text))


def write_text(path: str | Path, text: str) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def save_npz_deterministic(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """Write an (uncompressed) ``.npz`` whose bytes depend only on ``arrays``.

    ``np.savez`` stamps the current time into the zip entries, so the same data would get a
    new md5 (and a new DVC version) every time; here entries carry a fixed timestamp.
    """

    def _write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for key in sorted(arrays):
                info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_STORED
                info.external_attr = 0o644 << 16
                with zf.open(info, "w") as handle:
                    np.lib.format.write_array(handle, np.ascontiguousarray(arrays[key]))

    return write_atomic(path, _write)


def write_png(path: str | Path, figure: Any, dpi: int = 100) -> Path:
    """Save a matplotlib ``figure`` as a PNG at ``path`` atomically (the one image writer)."""
    return write_atomic(path, lambda tmp: figure.savefig(tmp, format="png", dpi=dpi))


def file_digest(path: str | Path, algorithm: str = "md5") -> str:
    """Hex digest of a file's bytes (``md5`` for data versions, ``sha256`` for checkpoints)."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def arrays_digest(*arrays: np.ndarray, algorithm: str = "md5") -> str:
    """Hex digest of the bytes of ``arrays`` (C order), e.g. the version of in-memory data."""
    digest = hashlib.new(algorithm)
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()
