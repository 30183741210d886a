"""Save and load classifier checkpoints (tensors + plain metadata; ``weights_only=True``)."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from medsec.errors import DataError
from medsec.io import write_atomic
from medsec.models.factory import PixelSpaceClassifier, build_classifier

ARCH_KEYS = ("model_name", "in_channels", "num_classes", "image_size", "norm", "dropout")


def save_classifier(path: str | Path, model: PixelSpaceClassifier, meta: dict[str, Any]) -> Path:
    """Write ``{"state_dict", "meta"}``; ``meta`` must hold :data:`ARCH_KEYS` (plain types)."""
    missing = [k for k in ARCH_KEYS if k not in meta]
    if missing:
        raise ValueError(f"checkpoint metadata lacks {', '.join(missing)}")
    payload = {"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
               "meta": dict(meta)}
    buffer = io.BytesIO()  # not the file name: torch stamps it into the archive
    torch.save(payload, buffer)
    return write_atomic(path, lambda tmp: tmp.write_bytes(buffer.getvalue()))


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict safely (``weights_only=True``); clear errors when unreadable."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{path}: not a readable MedSec checkpoint: {exc}") from exc
    if not isinstance(payload, dict) or "state_dict" not in payload or "meta" not in payload:
        raise DataError(f"{path}: not a MedSec checkpoint (no state_dict/meta)")
    return payload


def load_classifier(path: str | Path) -> tuple[PixelSpaceClassifier, dict[str, Any]]:
    """Rebuild the network from the metadata and load its weights; returns (model, meta)."""
    payload = read_checkpoint(path)
    meta = payload["meta"]
    model = build_classifier(
        meta["model_name"], meta["in_channels"], meta["num_classes"], tuple(meta["image_size"]),
        norm=meta["norm"], dropout=meta["dropout"],
    )
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, meta


def require_data_version(meta: dict[str, Any], name: str, version: str, path: str | Path) -> None:
    """DataError unless the checkpoint ``path`` (its ``meta``) was trained on data ``name`` at
    ``version`` (the md5 of the configured data file)."""
    if meta.get("data_version") != version:
        raise DataError(
            f"checkpoint {path} was trained on {meta.get('dataset')} version "
            f"{meta.get('data_version')}, but the configured data is {name} version "
            f"{version}: retrain first"
        )
