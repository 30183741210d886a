"""Devices: resolve ``train.accelerator`` to a torch device and keep tensors on the model's.

``auto`` is a CUDA GPU when torch sees one, else the CPU; ``gpu`` without one is a
:class:`~medsec.errors.ConfigError` naming ``train.accelerator`` (never a silent CPU run).
Code that runs a model (attacks, defenses, DP, federated clients, segmentation) moves its
inputs to :func:`model_device` of that model instead of assuming the CPU.
"""

from __future__ import annotations

import torch
from torch import nn

from medsec.errors import ConfigError


def gpu_count() -> int:
    """CUDA GPUs torch can use (0 on a CPU-only build or machine)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def require_gpu(devices: int = 1) -> None:
    """ConfigError naming ``train.accelerator`` unless torch sees at least ``devices`` GPUs."""
    found = gpu_count()
    if found < devices:
        build = f"torch {torch.__version__}" + ("" if torch.version.cuda else ", a CPU-only build")
        raise ConfigError(
            f"train.accelerator: gpu requested ({devices} device(s)) but torch sees {found} CUDA "
            f"GPU(s) ({build}); set train.accelerator=auto or cpu")


def resolve_accelerator(accelerator: str, devices: int = 1) -> str:
    """``cpu`` or ``gpu``: ``auto`` picks the GPU when one is available, ``gpu`` requires it."""
    if accelerator == "gpu":
        require_gpu(devices)
        return "gpu"
    if accelerator == "auto":
        return "gpu" if gpu_count() >= 1 else "cpu"
    if accelerator != "cpu":
        raise ConfigError(f"train.accelerator: unknown accelerator {accelerator!r}; "
                          "known: auto, cpu, gpu")
    return "cpu"


def torch_device(accelerator: str) -> torch.device:
    """The torch device of ``accelerator`` (``auto``/``cpu``/``gpu``) for single-process code."""
    return torch.device("cuda" if resolve_accelerator(accelerator) == "gpu" else "cpu")


def model_device(model: nn.Module) -> torch.device:
    """Device of ``model``'s first parameter (or buffer); the CPU for a parameter-free model."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def on_model_device(model: nn.Module, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``tensors`` moved to :func:`model_device` of ``model`` (no copy when already there)."""
    device = model_device(model)
    return tuple(t.to(device, non_blocking=True) for t in tensors)
