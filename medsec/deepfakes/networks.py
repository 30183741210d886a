"""Class-conditional DCGAN networks built from MONAI's ``Generator`` and ``Discriminator``.

The generator maps a latent vector z (N, latent_dim) and labels (N,) to images (N, C, H, W) in
[0, 1]: the one-hot label is appended to z, MONAI's ``Generator`` (Linear -> reshape ->
x2 transposed convolutions with BatchNorm/ReLU -> stride-1 output convolution) makes the
image and a sigmoid maps it to pixel space.

The discriminator maps images (N, C, H, W) in [0, 1] and labels (N,) to real/fake logits (N,):
the pixels are centred to [-1, 1] and the one-hot label appended as K constant channels
(:func:`condition_input`), MONAI's ``Discriminator`` (stride-2 convolutions with GroupNorm and
non-inplace LeakyReLU, then Linear) scores it. GroupNorm and non-inplace activations make it
trainable by Opacus (DP-SGD); conditioning happens in the input, so the hooked network takes
one tensor, as Opacus expects.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import Discriminator, Generator
from torch import Tensor, nn
from torch.utils.data import Dataset

from medsec.data.types import ImageDataset
from medsec.errors import ConfigError, DataError
from medsec.training.checkpoint import load_weights, read_checkpoint, save_checkpoint


@dataclass(frozen=True)
class GanArch:
    """Everything needed to rebuild a generator/discriminator pair (stored in checkpoints)."""

    image_shape: tuple[int, int, int]  # (C, H, W)
    num_classes: int
    latent_dim: int
    generator_channels: tuple[int, ...]
    discriminator_channels: tuple[int, ...]
    kernel_size: int = 3

    def to_meta(self) -> dict[str, Any]:
        """Plain-type dict (lists, ints) for checkpoint metadata."""
        meta = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in meta.items()}

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> GanArch:
        return cls(image_shape=tuple(int(s) for s in meta["image_shape"]),  # type: ignore[arg-type]
                   num_classes=int(meta["num_classes"]), latent_dim=int(meta["latent_dim"]),
                   generator_channels=tuple(int(c) for c in meta["generator_channels"]),
                   discriminator_channels=tuple(int(c) for c in meta["discriminator_channels"]),
                   kernel_size=int(meta.get("kernel_size", 3)))

    def check(self) -> None:
        """Raise ConfigError when the generator cannot produce this image size."""
        c, h, w = self.image_shape
        factor = 2 ** len(self.generator_channels)
        if h % factor or w % factor:
            raise ConfigError(f"generator with {len(self.generator_channels)} upsampling stages "
                              f"makes images whose side is a multiple of {factor}; {h}x{w} is not "
                              "(use fewer generator_channels)")
        if self.num_classes < 1 or c < 1:
            raise ConfigError(f"invalid GAN shape: {c} channel(s), {self.num_classes} classes")


def _one_hot(labels: Tensor, num_classes: int) -> Tensor:
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes - 1}], got [{int(labels.min())}, "
                         f"{int(labels.max())}]")
    return F.one_hot(labels.long(), num_classes).float()


class ConditionalGenerator(nn.Module):
    """(z (N, latent_dim), labels (N,)) -> images (N, C, H, W) in [0, 1]."""

    def __init__(self, arch: GanArch) -> None:
        super().__init__()
        arch.check()
        self.arch = arch
        c, h, w = arch.image_shape
        factor = 2 ** len(arch.generator_channels)
        widths = arch.generator_channels
        self.net = Generator(latent_shape=(arch.latent_dim + arch.num_classes,),
                             start_shape=(widths[0] * 2, h // factor, w // factor),
                             channels=(*widths, c), strides=(*(2,) * len(widths), 1),
                             kernel_size=arch.kernel_size, num_res_units=0,
                             act=("relu", {"inplace": False}), norm="batch")

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        cond = _one_hot(labels, self.arch.num_classes).to(z.dtype)
        return torch.sigmoid(self.net(torch.cat([z, cond], dim=1)))


def condition_input(images: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Discriminator input (N, C + K, H, W): pixels centred to [-1, 1] and K one-hot maps."""
    n, _, h, w = images.shape
    cond = _one_hot(labels, num_classes).to(images.dtype)
    maps = cond.view(n, -1, 1, 1).expand(n, num_classes, h, w)
    return torch.cat([images * 2 - 1, maps], dim=1)


class ConditionalDiscriminator(nn.Module):
    """(images (N, C, H, W) in [0, 1], labels (N,)) -> real/fake logits (N,).

    ``net`` (MONAI ``Discriminator``) takes the conditioned input of :func:`condition_input`
    alone: it is the module DP-SGD hooks, fed by :class:`ConditionedImages`.
    """

    def __init__(self, arch: GanArch) -> None:
        super().__init__()
        self.arch = arch
        c, h, w = arch.image_shape
        self.net = Discriminator(
            in_shape=(c + arch.num_classes, h, w), channels=arch.discriminator_channels,
            strides=(2,) * len(arch.discriminator_channels), kernel_size=arch.kernel_size,
            num_res_units=0, act=("leakyrelu", {"negative_slope": 0.2, "inplace": False}),
            norm=("group", {"num_groups": 8}), dropout=None, last_act=None,
        )

    def score(self, conditioned: Tensor) -> Tensor:
        """Logits (N,) of conditioned inputs (N, C + K, H, W)."""
        return self.net(conditioned).view(len(conditioned))

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        return self.score(condition_input(images, labels, self.arch.num_classes))


class ConditionedImages(Dataset):
    """Items ``(condition_input(image, label) (C + K, H, W), label)`` of an ImageDataset
    (conditioned once, up front: N x (C + K) x H x W float32 in memory)."""

    def __init__(self, data: ImageDataset, num_classes: int) -> None:
        self.labels = torch.from_numpy(np.ascontiguousarray(data.labels))
        self.inputs = condition_input(torch.from_numpy(np.ascontiguousarray(data.images)),
                                      self.labels, num_classes)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.inputs[index], self.labels[index]


# --------------------------------------------------------------------------- checkpoints


def save_generator(path: str | Path, generator: ConditionalGenerator, meta: dict[str, Any]) -> Path:
    """Generator checkpoint (the project's one format); ``meta`` gets the architecture."""
    return save_checkpoint(path, generator, "generator", {**meta, **generator.arch.to_meta()})


def check_generator_matches(
    meta: dict[str, Any], source: str, dataset: str | None = None,
    image_shape: tuple[int, ...] | None = None, num_classes: int | None = None,
) -> None:
    """Raise DataError when a generator was trained on another dataset, shape or class count."""
    if dataset is not None and meta.get("dataset") != dataset:
        raise DataError(f"generator {source} was trained on dataset {meta.get('dataset')!r}, not "
                        f"{dataset!r}: train a generator on {dataset!r} first")
    shape = tuple(int(s) for s in meta["image_shape"])
    if image_shape is not None and shape != tuple(image_shape):
        raise DataError(f"generator {source} makes images of shape {shape} (C, H, W), but "
                        f"{tuple(image_shape)} were requested")
    if num_classes is not None and int(meta["num_classes"]) != num_classes:
        raise DataError(f"generator {source} has {meta['num_classes']} classes, but {num_classes} "
                        "were requested")


def load_generator(
    path: str | Path, dataset: str | None = None, image_shape: tuple[int, ...] | None = None,
    num_classes: int | None = None,
) -> tuple[ConditionalGenerator, dict[str, Any]]:
    """Rebuild a generator (eval mode) and its metadata; checks it fits the expected data."""
    state, card = read_checkpoint(path, "generator")
    meta = card.meta()
    check_generator_matches(meta, str(path), dataset, image_shape, num_classes)
    return load_weights(ConditionalGenerator(GanArch.from_meta(meta)), state, path), meta
