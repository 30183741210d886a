"""The one checkpoint format of every network MedSec trains (classifier, segmenter, generator).

A checkpoint is ``{"state_dict": tensors, "card": ModelCard as plain types}``, written
atomically and read with ``torch.load(weights_only=True)``. The typed :class:`ModelCard`
says what the network is (kind and architecture), what it expects (image size, classes,
preprocessing; normalisation is the model's first layer) and where it came from (dataset,
data version, training run, DP record when private). Callers see the card as a flat ``meta``
dict (:meth:`ModelCard.meta`), the keys they always used.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from medsec.errors import DataError
from medsec.io import write_atomic
from medsec.models.factory import PixelSpaceClassifier, build_classifier
from medsec.training.config import default_hardware
from medsec.training.devices import torch_device

Kind = Literal["classifier", "segmenter", "generator"]
ARCH_KEYS: dict[str, tuple[str, ...]] = {
    "classifier": ("model_name", "in_channels", "num_classes", "image_size", "norm", "dropout"),
    "segmenter": ("name", "spatial_dims", "in_channels", "num_classes", "channels"),
    "generator": ("image_shape", "num_classes", "latent_dim", "generator_channels",
                  "discriminator_channels", "kernel_size"),
}
PREPROCESSING = "float32 pixels in [0, 1], channels first; normalisation is the first layer"
_CARD_KEYS = ("dataset", "data_version", "class_names", "training_run_id", "privacy")


class ModelCard(BaseModel):
    """What a checkpoint holds; ``architecture`` has exactly the kind's :data:`ARCH_KEYS`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Kind
    architecture: dict[str, Any]
    dataset: str | None = None
    data_version: str | None = None
    class_names: list[str] = []
    preprocessing: str = PREPROCESSING
    normalisation: dict[str, list[float]] | None = None
    training_run_id: str | None = None
    privacy: dict[str, Any] = {"mechanism": "none"}
    extra: dict[str, Any] = {}

    @classmethod
    def from_meta(cls, kind: Kind, meta: dict[str, Any],
                  normalisation: dict[str, list[float]] | None = None) -> ModelCard:
        """Card of a flat ``meta`` dict; ValueError naming the missing architecture keys."""
        missing = [k for k in ARCH_KEYS[kind] if k not in meta]
        if missing:
            raise ValueError(f"{kind} checkpoint metadata lacks {', '.join(missing)}")
        known = {k: meta[k] for k in _CARD_KEYS if meta.get(k) is not None}
        rest = {k: v for k, v in meta.items()
                if k not in ARCH_KEYS[kind] and k not in _CARD_KEYS and k != "kind"}
        return cls(kind=kind, architecture={k: meta[k] for k in ARCH_KEYS[kind]},
                   normalisation=normalisation, extra=rest, **known)

    def meta(self) -> dict[str, Any]:
        """Flat dict: architecture, provenance and extra keys (what loaders return)."""
        card = {k: getattr(self, k) for k in _CARD_KEYS if getattr(self, k) is not None}
        return {**self.architecture, **card, **self.extra, "kind": self.kind}


def _normalisation(model: nn.Module) -> dict[str, list[float]] | None:
    norm = getattr(model, "normalize", None)
    if norm is None or not hasattr(norm, "mean"):
        return None
    return {"mean": norm.mean.flatten().tolist(), "std": norm.std.flatten().tolist()}


def save_checkpoint(path: str | Path, model: nn.Module, kind: Kind,
                    meta: dict[str, Any]) -> Path:
    """Write ``model``'s tensors and the card of ``meta`` to ``path`` atomically. The bytes do
    not depend on the file name (torch would stamp it into the archive)."""
    card = ModelCard.from_meta(kind, meta, _normalisation(model))
    payload = {"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
               "card": card.model_dump(mode="json")}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return write_atomic(path, lambda tmp: tmp.write_bytes(buffer.getvalue()))


def read_checkpoint(path: str | Path, kind: Kind) -> tuple[dict[str, torch.Tensor], ModelCard]:
    """(state_dict, card) of a ``kind`` checkpoint, loaded with ``weights_only=True``;
    DataError naming ``path`` when missing, unreadable, not MedSec's or of another kind."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{path}: not a readable MedSec checkpoint: {exc}") from exc
    if not isinstance(payload, dict) or "state_dict" not in payload or "card" not in payload:
        raise DataError(f"{path}: not a MedSec checkpoint (no state_dict/card)")
    try:
        card = ModelCard.model_validate(payload["card"])
    except ValidationError as exc:
        raise DataError(f"{path}: invalid model card: {exc.errors()[0]['msg']}") from None
    if card.kind != kind:
        raise DataError(f"{path}: not a MedSec {kind} checkpoint (it holds a {card.kind})")
    return payload["state_dict"], card


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> nn.Module:
    """Load ``state`` into ``model`` (eval mode); DataError if it does not fit the card."""
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise DataError(f"{path}: weights do not fit the recorded architecture: {exc}") from None
    return model.eval()


def save_classifier(path: str | Path, model: PixelSpaceClassifier, meta: dict[str, Any]) -> Path:
    """Classifier checkpoint; ``meta`` must hold the classifier :data:`ARCH_KEYS`."""
    return save_checkpoint(path, model, "classifier", meta)


def load_classifier(path: str | Path) -> tuple[PixelSpaceClassifier, dict[str, Any]]:
    """Rebuild the classifier from its card and load its weights; returns (model, meta). The
    model is on the process default device (``train.accelerator``; the CPU without a GPU)."""
    state, card = read_checkpoint(path, "classifier")
    a = card.architecture
    model = build_classifier(a["model_name"], a["in_channels"], a["num_classes"],
                             tuple(a["image_size"]), norm=a["norm"], dropout=a["dropout"])
    device = torch_device(default_hardware().accelerator)
    return load_weights(model, state, path).to(device), card.meta()


def require_data_version(meta: dict[str, Any], name: str, version: str, path: str | Path) -> None:
    """DataError unless the checkpoint ``path`` (its ``meta``) was trained on data ``name`` at
    ``version`` (the md5 of the configured data file)."""
    if meta.get("data_version") != version:
        raise DataError(
            f"checkpoint {path} was trained on {meta.get('dataset')} version "
            f"{meta.get('data_version')}, but the configured data is {name} version "
            f"{version}: retrain first"
        )
