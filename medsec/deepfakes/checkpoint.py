"""Generator checkpoints: tensors + plain metadata, loaded with ``weights_only=True``.

A checkpoint records what it was trained on (dataset name and version, image shape, classes):
:func:`load_generator` refuses to sample for another dataset or image shape.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import torch

from medsec.deepfakes.networks import ConditionalGenerator, GanArch
from medsec.errors import DataError
from medsec.io import write_atomic
from medsec.training.checkpoint import read_checkpoint

GENERATOR_KIND = "medsec.conditional_gan.generator"


def save_generator(path: str | Path, generator: ConditionalGenerator,
                   meta: dict[str, Any]) -> Path:
    """Write ``{"state_dict", "meta"}``; ``meta`` (plain types) gets the architecture added."""
    full = {**meta, **generator.arch.to_meta(), "kind": GENERATOR_KIND}
    payload = {"state_dict": {k: v.detach().cpu() for k, v in generator.state_dict().items()},
               "meta": full}
    buffer = io.BytesIO()  # not the file: torch stamps the file name into the archive, and the
    torch.save(payload, buffer)  # bytes (and the sha256 in the dataset metadata) must not vary
    return write_atomic(path, lambda tmp: tmp.write_bytes(buffer.getvalue()))


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file (the checkpoint hash recorded with a fake dataset)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_generator_matches(
    meta: dict[str, Any], source: str, dataset: str | None = None,
    image_shape: tuple[int, ...] | None = None, num_classes: int | None = None,
) -> None:
    """Raise DataError when a generator was trained on another dataset, shape or class count."""
    if dataset is not None and meta.get("dataset") != dataset:
        raise DataError(
            f"generator {source} was trained on dataset {meta.get('dataset')!r}, not "
            f"{dataset!r}: train a generator on {dataset!r} first"
        )
    shape = tuple(int(s) for s in meta["image_shape"])
    if image_shape is not None and shape != tuple(image_shape):
        raise DataError(
            f"generator {source} makes images of shape {shape} (C, H, W), but "
            f"{tuple(image_shape)} were requested"
        )
    if num_classes is not None and int(meta["num_classes"]) != num_classes:
        raise DataError(
            f"generator {source} has {meta['num_classes']} classes, but {num_classes} were "
            f"requested"
        )


def load_generator(
    path: str | Path, dataset: str | None = None, image_shape: tuple[int, ...] | None = None,
    num_classes: int | None = None,
) -> tuple[ConditionalGenerator, dict[str, Any]]:
    """Rebuild a generator (eval mode) and its metadata; checks it fits the expected data."""
    payload = read_checkpoint(path)
    meta = payload["meta"]
    if meta.get("kind") != GENERATOR_KIND:
        raise DataError(f"{path}: not a MedSec generator checkpoint (kind {meta.get('kind')!r})")
    check_generator_matches(meta, str(path), dataset, image_shape, num_classes)
    generator = ConditionalGenerator(GanArch.from_meta(meta))
    try:
        generator.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise DataError(f"{path}: weights do not fit the recorded architecture: {exc}") from None
    return generator.eval(), meta
