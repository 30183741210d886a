"""Model weights <-> Flower ``ArrayRecord``, with shape checks and message sizes.

What travels is every floating-point entry of the network's ``state_dict`` (parameters and
BatchNorm running statistics, float32). Integer buffers (``num_batches_tracked``) and the fixed
pixel normalisation (``normalize.*``: constants every site builds identically, never trained)
stay local, so no noise or attack can reach them.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, RecordDict
from torch import nn

from medsec.errors import MedSecError

LOCAL_ONLY_PREFIXES = ("normalize.",)


class ModelMismatchError(MedSecError, ValueError):
    """Two parties hold models of different architecture (the message names the entry)."""


def model_arrays(net: nn.Module) -> dict[str, np.ndarray]:
    """The exchanged weights of ``net``: name -> float32 array (a copy)."""
    return {k: v.detach().cpu().numpy().astype(np.float32, copy=True)
            for k, v in net.state_dict().items()
            if torch.is_floating_point(v) and not k.startswith(LOCAL_ONLY_PREFIXES)}


def to_record(arrays: Mapping[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


def from_record(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in record.items()}


def check_same_shapes(expected: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray],
                      who: str) -> None:
    """Raise :class:`ModelMismatchError` naming the first missing/extra/mis-shaped entry."""
    missing = [k for k in expected if k not in got]
    extra = [k for k in got if k not in expected]
    if missing or extra:
        raise ModelMismatchError(f"{who}: model entries differ from the global model (missing "
                                 f"{missing[:3]}, unexpected {extra[:3]}): every hospital must "
                                 "use the same model.name/norm")
    for key, ref in expected.items():
        if tuple(got[key].shape) != tuple(ref.shape):
            raise ModelMismatchError(f"{who}: '{key}' has shape {tuple(got[key].shape)}, the "
                                     f"global model has {tuple(ref.shape)}: every hospital must "
                                     "use the same model and data shape")


def load_arrays(net: nn.Module, arrays: Mapping[str, np.ndarray], who: str = "client") -> None:
    """Copy ``arrays`` into ``net`` in place (shape-checked; integer buffers untouched)."""
    check_same_shapes(model_arrays(net), arrays, who)
    state = net.state_dict()
    with torch.no_grad():
        for key, value in arrays.items():
            state[key].copy_(torch.from_numpy(np.asarray(value)))


def flatten(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """All entries concatenated (in key order) into one float64 vector."""
    return np.concatenate([np.asarray(v, np.float64).ravel() for v in arrays.values()])


def unflatten(vector: np.ndarray, like: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Inverse of :func:`flatten` with the keys/shapes of ``like`` (float32)."""
    sizes = [int(np.prod(v.shape)) for v in like.values()]
    if len(vector) != sum(sizes):
        raise ModelMismatchError(f"vector of {len(vector)} values cannot fill a model of "
                                 f"{sum(sizes)} values")
    out, start = {}, 0
    for (key, ref), size in zip(like.items(), sizes, strict=True):
        out[key] = vector[start:start + size].reshape(ref.shape).astype(np.float32)
        start += size
    return out


def payload_bytes(content: RecordDict) -> int:
    """Bytes of a message's payload: array data, bytes/str config values, 8 per number."""
    total = 0
    for record in content.array_records.values():
        total += sum(len(a.data) for a in record.values())
    for record in (*content.config_records.values(), *content.metric_records.values()):
        for value in record.values():
            if isinstance(value, bytes | str):
                total += len(value)
            elif isinstance(value, list):
                total += sum(len(v) if isinstance(v, bytes | str) else 8 for v in value)
            else:
                total += 8
    return total
