"""MagNet's autoencoder (Meng & Chen 2017): a small MONAI ``AutoEncoder`` trained through
Lightning on clean training images, used as a reformer (purification) and as a
reconstruction-error detector (:class:`~medsec.defenses.detectors.MagNetDetector`)."""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
import torch.nn.functional as F
from monai.networks.nets import AutoEncoder
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from medsec.defenses.base import DefenseError
from medsec.defenses.transforms import InputTransform
from medsec.training.fit import make_trainer, seed_everything


class PixelAutoEncoder(nn.Module):
    """Images (N, C, H, W) in [0, 1] -> reconstructions in [0, 1] (sigmoid output).

    ``trained`` is False until :func:`train_autoencoder` has fitted it.
    """

    def __init__(self, in_channels: int, channels: Sequence[int] = (16, 32)) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if not channels or min(channels) < 1:
            raise ValueError(f"autoencoder channels must be positive, got {channels}")
        self.net = AutoEncoder(
            spatial_dims=2, in_channels=in_channels, out_channels=in_channels,
            channels=channels, strides=(2,) * len(channels), act=("relu", {"inplace": False}),
        )
        self.trained = False

    def forward(self, x: Tensor) -> Tensor:
        out = self.net(x)
        if out.shape != x.shape:
            raise DefenseError(
                f"the autoencoder maps {tuple(x.shape)} to {tuple(out.shape)}: the image size "
                f"must be divisible by 2**{len(self.net.encode)} (use fewer channels)"
            )
        return torch.sigmoid(out)


class _AutoEncoderModule(L.LightningModule):
    """Mean squared reconstruction error of clean images from slightly noisy inputs."""

    def __init__(self, ae: PixelAutoEncoder, lr: float, noise: float) -> None:
        super().__init__()
        self.ae, self.lr, self.noise = ae, lr, noise

    def training_step(self, batch: tuple[Tensor], batch_idx: int) -> Tensor:
        (x,) = batch
        noisy = (x + self.noise * torch.randn_like(x)).clamp(0, 1) if self.noise else x
        return F.mse_loss(self.ae(noisy), x)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.ae.parameters(), lr=self.lr)


def train_autoencoder(
    images: Tensor,
    channels: Sequence[int] = (16, 32),
    epochs: int = 5,
    lr: float = 1e-3,
    noise: float = 0.025,
    batch_size: int = 64,
    seed: int = 0,
) -> PixelAutoEncoder:
    """Fit a :class:`PixelAutoEncoder` on clean ``images`` (N, C, H, W) in [0, 1]."""
    seed_everything(seed)
    ae = PixelAutoEncoder(images.shape[1], channels)
    ae(images[:2])  # fails early on an incompatible image size
    loader = DataLoader(TensorDataset(images), batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    make_trainer(epochs).fit(_AutoEncoderModule(ae, lr, noise), train_dataloaders=loader)
    ae.eval()
    ae.trained = True
    return ae


def require_trained(ae: PixelAutoEncoder | None, defense: str) -> PixelAutoEncoder:
    """Return ``ae`` if it was trained, else raise a :class:`DefenseError` naming ``defense``."""
    if ae is None or not getattr(ae, "trained", False):
        raise DefenseError(
            f"{defense} needs a trained autoencoder: fit one with "
            "medsec.defenses.autoencoder.train_autoencoder(train_images) first"
        )
    return ae


class Reformer(InputTransform):
    """MagNet reformer: replace the input by its autoencoder reconstruction (differentiable)."""

    name = "magnet_reformer"

    def __init__(self, autoencoder: PixelAutoEncoder) -> None:
        super().__init__()
        self.autoencoder = require_trained(autoencoder, "the MagNet reformer")

    def forward(self, x: Tensor) -> Tensor:
        return self.autoencoder(x)
