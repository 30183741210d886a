"""Batched inference helpers."""

from __future__ import annotations

import torch
from torch import nn

from medsec.models.guard import model_guard
from medsec.training.devices import model_device


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Logits (N, K), on the device of ``images``, for images (N, C, H, W) in [0, 1], in
    batches on the model's device; the model runs in eval mode with frozen parameters
    (:func:`medsec.models.guard.model_guard`, state restored)."""
    device = model_device(model)
    with model_guard(model), torch.inference_mode():
        out = [model(images[i : i + batch_size].to(device)).float()
               for i in range(0, len(images), batch_size)]
    return torch.cat(out).to(images.device).clone() if out else torch.empty(0)
