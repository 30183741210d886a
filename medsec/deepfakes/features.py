"""In-domain features for FID-style metrics: the penultimate layer of a MedSec classifier.

The features of an image are the input of the classifier's last ``nn.Linear`` layer (for
``small_cnn``, MONAI ``Classifier``: the flattened last convolution map, 64 x 4 x 4 = 1024
values for 28 or 32 px images; ``resnet18``: the 512 pooled channels; ``densenet121``: the
1024 pooled channels). No downloaded (Inception) weights are involved.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medsec.models.guard import model_guard


def last_linear(model: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` of ``model`` (in registration order); ValueError if none."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer to take features from")
    return linears[-1]


@torch.no_grad()
def penultimate_features(model: nn.Module, images: Tensor, batch_size: int = 256) -> Tensor:
    """Features (N, D) float32 of images (N, C, H, W) in [0, 1] (model in eval mode; restored)."""
    layer = last_linear(model)
    captured: list[Tensor] = []
    handle = layer.register_forward_hook(
        lambda _m, inputs, _out: captured.append(inputs[0].detach().flatten(1)))
    try:
        with model_guard(model):
            for i in range(0, len(images), batch_size):
                model(images[i:i + batch_size])
    finally:
        handle.remove()
    return torch.cat(captured) if captured else torch.empty(0, layer.in_features)
