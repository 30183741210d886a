"""Batched inference helpers."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Logits (N, K) for images (N, C, H, W) in [0,1]; model put in eval mode and restored."""
    was_training = model.training
    model.eval()
    try:
        out = [model(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)
