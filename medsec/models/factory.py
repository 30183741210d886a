"""Name -> MONAI classification network, wrapped so it takes pixel-space images.

Every network returned by :func:`build_classifier` maps images float32 in [0, 1] of shape
(N, C, H, W) to logits (N, num_classes); per-channel normalisation is its first layer, so
attacks and defenses work in pixel space.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from monai.networks.nets import Classifier, DenseNet121, ResNet
from torch import nn

from medsec.errors import ConfigError

_NORMS = {"batch": "batch", "group": ("group", {"num_groups": 8}), "instance": "instance"}


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel of images (N, C, *S), any number of spatial dims;
    buffers travel with the checkpoint."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    @classmethod
    def of(cls, in_channels: int, mean: list[float] | None, std: list[float] | None,
           owner: str = "model ") -> Normalize:
        """Mean and std per channel (None: 0.5, mapping [0, 1] to [-1, 1]); ConfigError naming
        ``owner`` unless there is one mean and one positive std per channel."""
        mean = mean if mean is not None else [0.5] * in_channels
        std = std if std is not None else [0.5] * in_channels
        if len(mean) != in_channels or len(std) != in_channels or min(std) <= 0:
            raise ConfigError(f"{owner}normalisation needs one mean and one positive std per "
                              "channel")
        return cls(mean, std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, *([1] * (x.dim() - 2)))
        return (x - self.mean.view(shape)) / self.std.view(shape)


class PixelSpaceClassifier(nn.Module):
    """``Normalize`` followed by a backbone; input (N,C,H,W) in [0,1], output logits."""

    def __init__(self, normalize: Normalize, backbone: nn.Module) -> None:
        super().__init__()
        self.normalize = normalize
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.normalize(x))


@dataclass(frozen=True)
class ModelSpec:
    description: str
    build: Callable[[int, int, tuple[int, int], str, float], nn.Module]


def _small_cnn(in_ch: int, n_cls: int, hw: tuple[int, int], norm: str, dropout: float):
    return Classifier(
        in_shape=(in_ch, *hw), classes=n_cls, channels=(16, 32, 64), strides=(2, 2, 2),
        num_res_units=0, act=("relu", {"inplace": False}), norm=_NORMS[norm],
        dropout=dropout or None)


def _resnet18(in_ch: int, n_cls: int, hw: tuple[int, int], norm: str, dropout: float):
    # MedMNIST v2 ResNet-18 for 28x28: 3x3 stem, stride 1, no max-pool.
    return ResNet(
        block="basic", layers=[2, 2, 2, 2], block_inplanes=[64, 128, 256, 512], spatial_dims=2,
        n_input_channels=in_ch, conv1_t_size=3, conv1_t_stride=1, no_max_pool=True,
        num_classes=n_cls, norm=_NORMS[norm])


def _densenet121(in_ch: int, n_cls: int, hw: tuple[int, int], norm: str, dropout: float):
    return DenseNet121(spatial_dims=2, in_channels=in_ch, out_channels=n_cls, norm=_NORMS[norm],
                       act=("relu", {"inplace": False}), dropout_prob=dropout)


MODELS: dict[str, ModelSpec] = {
    "small_cnn": ModelSpec("MONAI Classifier, 3 conv layers (16-32-64): fast on CPU", _small_cnn),
    "resnet18": ModelSpec("MONAI ResNet-18, MedMNIST-style 3x3 stem without max-pool",
                          _resnet18),
    "densenet121": ModelSpec("MONAI DenseNet121", _densenet121),
}


def known_model_names() -> list[str]:
    return list(MODELS)


def build_classifier(name: str, in_channels: int, num_classes: int, image_size: tuple[int, int],
                     mean: list[float] | None = None, std: list[float] | None = None,
                     norm: str = "batch", dropout: float = 0.0) -> PixelSpaceClassifier:
    """Build network ``name`` (see :data:`MODELS`) with normalisation as its first layer."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    if norm not in _NORMS:
        raise ConfigError(f"unknown norm {norm!r}; known: {', '.join(_NORMS)}")
    normalize = Normalize.of(in_channels, mean, std)
    backbone = MODELS[name].build(in_channels, num_classes, tuple(image_size), norm, dropout)
    if norm == "group":
        _replace_batchnorm(backbone)
    model = PixelSpaceClassifier(normalize, backbone)
    _check_input_size(model, name, in_channels, tuple(image_size))
    return model


def _replace_batchnorm(module: nn.Module, groups: int = 8) -> None:
    """Swap any BatchNorm a MONAI network hard-codes (e.g. ResNet shortcuts) for GroupNorm."""
    for child_name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            channels = child.num_features
            setattr(module, child_name, nn.GroupNorm(min(groups, channels), channels))
        else:
            _replace_batchnorm(child, groups)


def _check_input_size(model: nn.Module, name: str, in_ch: int, hw: tuple[int, int]) -> None:
    """Fail early, naming the model, when it cannot take images of this size."""
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_ch, *hw))
    except RuntimeError as exc:
        raise ConfigError(
            f"model {name!r} cannot take {in_ch}x{hw[0]}x{hw[1]} images "
            f"(it downsamples too much for this size; use a larger image or another model): "
            f"{str(exc).splitlines()[0]}") from None
    finally:
        model.train()
