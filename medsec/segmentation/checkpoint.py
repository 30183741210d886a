"""Save and load segmenter checkpoints (tensors + plain metadata; ``weights_only=True``)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from medsec.io import write_atomic
from medsec.segmentation.models import PixelSpaceSegmenter, build_segmenter, segmenter_meta_keys
from medsec.training.checkpoint import read_checkpoint


def save_segmenter(path: str | Path, model: PixelSpaceSegmenter, meta: dict[str, Any]) -> Path:
    """Write ``{"state_dict", "meta"}``; ``meta`` must hold :func:`segmenter_meta_keys`."""
    missing = [k for k in segmenter_meta_keys() if k not in meta]
    if missing:
        raise ValueError(f"segmenter metadata lacks {', '.join(missing)}")
    payload = {"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
               "meta": dict(meta)}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return write_atomic(path, lambda tmp: tmp.write_bytes(buffer.getvalue()))


def load_segmenter(path: str | Path) -> tuple[PixelSpaceSegmenter, dict[str, Any]]:
    """Rebuild the segmenter from its metadata, load the weights; returns (model, meta)."""
    payload = read_checkpoint(path)
    meta = payload["meta"]
    model = build_segmenter(meta["name"], meta["spatial_dims"], meta["in_channels"],
                            meta["num_classes"], tuple(meta["channels"]))
    model.load_state_dict(payload["state_dict"])
    return model.eval(), meta
