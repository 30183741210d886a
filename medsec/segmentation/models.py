"""Name -> MONAI segmentation network, wrapped so it takes pixel-space images (2D or 3D).

Every network from :func:`build_segmenter` maps images float32 in [0, 1] of shape (N, C, H, W)
or (N, C, D, H, W) to dense logits (N, num_classes, H, W) / (N, num_classes, D, H, W); the
per-channel normalisation is its first layer, so attacks work in pixel space.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from monai.networks.nets import AttentionUnet, SegResNet, UNet
from torch import nn

from medsec.errors import ConfigError
from medsec.models.factory import Normalize, PixelSpaceClassifier
from medsec.training.checkpoint import load_weights, read_checkpoint, save_checkpoint


class PixelSpaceSegmenter(PixelSpaceClassifier):
    """``Normalize`` then a dense backbone: (N,C,*S) in [0,1] -> logits (N,K,*S)."""


Builder = Callable[[int, int, int, tuple[int, ...]], nn.Module]


SEGMENTERS: dict[str, Builder] = {
    "unet": lambda dims, in_ch, n_cls, channels: UNet(
        spatial_dims=dims, in_channels=in_ch, out_channels=n_cls, channels=channels,
        strides=(2,) * (len(channels) - 1), num_res_units=1, norm="instance"),
    "segresnet": lambda dims, in_ch, n_cls, channels: SegResNet(
        spatial_dims=dims, init_filters=channels[0], in_channels=in_ch, out_channels=n_cls,
        blocks_down=(1,) * len(channels), blocks_up=(1,) * (len(channels) - 1),
        norm=("group", {"num_groups": min(4, channels[0])}), act=("relu", {"inplace": False})),
    "attention_unet": lambda dims, in_ch, n_cls, channels: AttentionUnet(
        spatial_dims=dims, in_channels=in_ch, out_channels=n_cls, channels=channels,
        strides=(2,) * (len(channels) - 1)),
}
"""Known segmenter names (MONAI UNet is the default)."""


def build_segmenter(name: str = "unet", spatial_dims: int = 2, in_channels: int = 1,
                    num_classes: int = 2, channels: tuple[int, ...] = (8, 16, 32),
                    mean: list[float] | None = None, std: list[float] | None = None,
                    ) -> PixelSpaceSegmenter:
    """Build segmenter ``name`` (:data:`SEGMENTERS`) with normalisation as its first layer.

    ``channels`` are the feature widths per level (each level halves the spatial size, so a
    side must be divisible by ``2 ** (len(channels) - 1)``).
    """
    if name not in SEGMENTERS:
        raise ConfigError(f"unknown segmenter {name!r}; known: {', '.join(SEGMENTERS)}")
    if spatial_dims not in (2, 3):
        raise ConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if num_classes < 2:
        raise ConfigError(f"num_classes must be >= 2 (background + lesion), got {num_classes}")
    normalize = Normalize.of(in_channels, mean, std, owner="")
    backbone = SEGMENTERS[name](spatial_dims, in_channels, num_classes, tuple(channels))
    return PixelSpaceSegmenter(normalize, backbone)


def save_segmenter(path: str | Path, model: PixelSpaceSegmenter, meta: dict[str, Any]) -> Path:
    """Segmenter checkpoint (the project's one format); ``meta`` holds the architecture keys."""
    return save_checkpoint(path, model, "segmenter", meta)


def load_segmenter(path: str | Path) -> tuple[PixelSpaceSegmenter, dict[str, Any]]:
    """Rebuild the segmenter from its card, load the weights; returns (model, meta)."""
    state, card = read_checkpoint(path, "segmenter")
    a = card.architecture
    model = build_segmenter(a["name"], a["spatial_dims"], a["in_channels"], a["num_classes"],
                            tuple(a["channels"]))
    return load_weights(model, state, path), card.meta()
