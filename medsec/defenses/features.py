"""Penultimate features of a classifier: the input of its last ``nn.Linear`` layer.

Works for every network of :mod:`medsec.models.factory` (MONAI ``Classifier``'s ``final``
linear layer, ResNet's ``fc``, DenseNet's ``class_layers.out``) and any model whose logits
come from a final linear layer. Gradients flow through the features.
"""

from __future__ import annotations

from torch import Tensor, nn

from medsec.errors import ConfigError


def last_linear(model: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` registered in ``model`` (its classification head)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError(
            f"{type(model).__name__} has no nn.Linear layer: penultimate features (Mahalanobis "
            "detector) need a classifier whose logits come from a final linear layer"
        )
    return linears[-1]


def features_and_logits(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """One forward pass: (features (N, D) entering the last linear layer, logits (N, K))."""
    captured: list[Tensor] = []
    handle = last_linear(model).register_forward_pre_hook(
        lambda _module, inputs: captured.append(inputs[0])
    )
    try:
        logits = model(x)
    finally:
        handle.remove()
    if not captured:
        raise ConfigError(f"the last linear layer of {type(model).__name__} was not called")
    return captured[-1].flatten(1), logits


def penultimate_features(model: nn.Module, x: Tensor) -> Tensor:
    """Features (N, D) of images ``x`` (N, C, H, W) in [0, 1] before the last linear layer."""
    return features_and_logits(model, x)[0]
