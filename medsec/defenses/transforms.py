"""Input-transformation defenses and the wrappers adaptive attacks see them through.

Every transform maps images (N, C, H, W) float in [0, 1] to images of the same shape in
[0, 1]. Non-differentiable transforms return their *true* almost-everywhere derivative, zero
(bit depth and JPEG are piecewise constant), which is what a defense-unaware PGD sees;
randomised ones (Gaussian noise) draw fresh randomness on every call.

- :class:`Preprocessed` ``(model, transform)`` is the defended classifier; ``bpda=True``
  gives its BPDA view (Athalye et al. 2018): forward pass through the transform, backward pass
  as the identity (straight-through).
- :class:`EOT` averages a randomised model over samples (expectation over transformation):
  it returns ``log E[softmax]`` so any attack loss on it follows the expected prediction.
"""

from __future__ import annotations

import io
import math
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn


class InputTransform(nn.Module):
    """Base class: images (N, C, H, W) in [0, 1] -> same shape in [0, 1]."""

    name: ClassVar[str] = "transform"


def _check_range(name: str, value: int, low: float, high: float) -> int:
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return value


class BitDepth(InputTransform):
    """Feature squeezing (Xu et al. 2018): round to ``bits`` bits per channel."""

    name = "bit_depth"

    def __init__(self, bits: int = 4) -> None:
        super().__init__()
        self.bits = _check_range("bits", bits, 1, 8)
        self.levels = 2**bits - 1

    def forward(self, x: Tensor) -> Tensor:
        return torch.round(x * self.levels) / self.levels


class MedianFilter(InputTransform):
    """Feature squeezing by a ``size`` x ``size`` median filter, as ``scipy.ndimage.
    median_filter`` computes it (symmetric 'reflect' borders; for even sizes the window
    reaches one pixel further back and the upper median is taken). Differentiable almost
    everywhere: the gradient flows to the median pixel of each window."""

    name = "median_filter"

    def __init__(self, size: int = 3) -> None:
        super().__init__()
        self.size = _check_range("median filter size", size, 2, math.inf)

    def forward(self, x: Tensor) -> Tensor:
        k = self.size
        padded = _symmetric_pad(x, k // 2, (k - 1) // 2)
        n, c, h, w = x.shape
        windows = padded.unfold(2, k, 1).unfold(3, k, 1)  # (N, C, H, W, k, k)
        return windows.reshape(n, c, h, w, k * k).kthvalue(k * k // 2 + 1, dim=-1).values


def _symmetric_pad(x: Tensor, before: int, after: int) -> Tensor:
    """Pad the last two dims by mirroring with the edge repeated (scipy's 'reflect')."""
    for dim in (-2, -1):
        size = x.shape[dim]
        idx = torch.arange(-before, size + after, device=x.device)
        idx = torch.where(idx < 0, -idx - 1, idx)
        idx = torch.where(idx >= size, 2 * size - idx - 1, idx).clamp(0, size - 1)
        x = x.index_select(dim, idx)
    return x


class _JpegRoundTrip(torch.autograd.Function):
    """PIL JPEG encode/decode; backward is the true a.e. derivative, zero."""

    @staticmethod
    def forward(ctx, x: Tensor, quality: int) -> Tensor:  # type: ignore[override]
        return jpeg_numpy(x.detach().cpu().numpy(), quality).to(x.device, x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return torch.zeros_like(grad), None


def jpeg_numpy(images: np.ndarray, quality: int) -> Tensor:
    """JPEG round trip with PIL of images (N, C, H, W) in [0, 1]: pixels are rounded to 8 bits,
    3-channel images are coded as RGB, others channel by channel as greyscale."""
    pixels = np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8)
    out = np.empty_like(pixels)
    for i in range(pixels.shape[0]):
        if pixels.shape[1] == 3:
            out[i] = _jpeg_one(pixels[i].transpose(1, 2, 0), "RGB", quality).transpose(2, 0, 1)
        else:
            for ch in range(pixels.shape[1]):
                out[i, ch] = _jpeg_one(pixels[i, ch], "L", quality)
    return torch.from_numpy(out.astype(np.float32) / 255.0)


def _jpeg_one(pixels: np.ndarray, mode: str, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode=mode).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert(mode))


class JPEG(InputTransform):
    """JPEG compression at ``quality`` (1-95), done by PIL (exact codec, not a differentiable
    approximation); attacked through BPDA."""

    name = "jpeg"

    def __init__(self, quality: int = 75) -> None:
        super().__init__()
        self.quality = _check_range("JPEG quality", quality, 1, 95)

    def forward(self, x: Tensor) -> Tensor:
        return _JpegRoundTrip.apply(x, self.quality)


class LowPass(InputTransform):
    """Frequency-domain low-pass filter: zero the 2-D FFT coefficients whose radial frequency
    exceeds ``cutoff`` x Nyquist, invert, clip to [0, 1] (linear, hence differentiable)."""

    name = "low_pass"

    def __init__(self, cutoff: float = 0.5) -> None:
        super().__init__()
        if not 0 < cutoff <= 1:
            raise ValueError(f"cutoff must be in (0, 1] (fraction of Nyquist), got {cutoff}")
        self.cutoff = cutoff

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        fy = torch.fft.fftfreq(h, device=x.device).abs().view(h, 1)
        fx = torch.fft.rfftfreq(w, device=x.device).view(1, -1)
        keep = (torch.sqrt(fy**2 + fx**2) <= 0.5 * self.cutoff).to(x.dtype)
        spectrum = torch.fft.rfft2(x) * keep
        return torch.fft.irfft2(spectrum, s=(h, w)).clamp(0.0, 1.0)


class GaussianNoise(InputTransform):
    """Add N(0, sigma^2) noise (pixel units, not clipped: randomized smoothing's noise)."""

    name = "gaussian_noise"

    def __init__(self, sigma: float) -> None:
        super().__init__()
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        self.sigma = float(sigma)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.sigma * torch.randn_like(x)


def straight_through(x: Tensor, transform: nn.Module) -> Tensor:
    """BPDA with the identity: the value of ``transform(x)``, the gradient of ``x``."""
    with torch.no_grad():
        y = transform(x.detach())
    return x + (y - x).detach()


class Preprocessed(nn.Module):
    """The classifier behind an input transformation: ``model(transform(x))``.

    Args:
        model: pixel-space classifier, images (N, C, H, W) in [0, 1] -> logits (N, K).
        transform: an :class:`InputTransform` (or any module mapping images to images).
        bpda: backward pass through the transform as the identity (the adaptive view).
    """

    def __init__(self, model: nn.Module, transform: nn.Module, bpda: bool = False) -> None:
        super().__init__()
        self.model = model
        self.transform = transform
        self.bpda = bool(bpda)

    def forward(self, x: Tensor) -> Tensor:
        z = straight_through(x, self.transform) if self.bpda else self.transform(x)
        return self.model(z)

    def with_bpda(self) -> Preprocessed:
        """The same model and transform (shared, not copied) seen through BPDA."""
        return Preprocessed(self.model, self.transform, bpda=True)


class EOT(nn.Module):
    """Expectation over transformation: ``log mean_s softmax(model(x))`` over ``samples``
    draws of a randomised ``model`` (N, K log-probabilities, usable as logits)."""

    def __init__(self, model: nn.Module, samples: int) -> None:
        super().__init__()
        if samples < 1:
            raise ValueError(f"EOT samples must be >= 1, got {samples}")
        self.model = model
        self.samples = int(samples)

    def forward(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        repeated = x.repeat(self.samples, *([1] * (x.dim() - 1)))
        logp = F.log_softmax(self.model(repeated), dim=1).view(self.samples, n, -1)
        return torch.logsumexp(logp, dim=0) - math.log(self.samples)
