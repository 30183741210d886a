"""MedMNIST-C corruptions (Di Salvo, Doerrich & Ledig 2024) at 5 severities, and the accuracy
of a classifier under them.

The authors' package ``medmnistc`` 0.1.0 is installed (``--no-deps``), but none of its
``medmnistc.corruptions`` modules import here: ``corruptions/base.py`` imports OpenCV (``cv2``),
``filter.py`` Wand and torchvision, ``enhance.py`` torchvision. So the functions below follow
its definitions (``medmnistc/corruptions/{noise,compression,filter,enhance}.py``) and its
severity table ``CORRUPTIONS_DS["pneumoniamnist"]`` (``registry.py``; a unit test parses that
file and checks the parameters are the same): the same PIL/skimage calls where it makes
them, torchvision's Gaussian-blur and gamma formulas re-implemented. Every corruption works on
8-bit images (as the reference: PIL in, uint8 out).

The chest X-ray set (PneumoniaMNIST's) is used for every grayscale dataset, the phantoms
included (MedMNIST-C defines per-dataset sets only for MedMNIST).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageEnhance

Corruption = Callable[[Image.Image, object, np.random.Generator], np.ndarray]
SEVERITIES = 5


def _unit(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.float64) / 255.0


def _to_u8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0, 1) * 255).astype(np.uint8)  # the reference truncates, not rounds


def gaussian_noise(img: Image.Image, c: float, rng: np.random.Generator) -> np.ndarray:
    x = _unit(img)
    return _to_u8(x + rng.normal(size=x.shape, scale=c))


def speckle_noise(img: Image.Image, c: float, rng: np.random.Generator) -> np.ndarray:
    x = _unit(img)
    return _to_u8(x + x * rng.normal(size=x.shape, scale=c))


def impulse_noise(img: Image.Image, c: float, rng: np.random.Generator) -> np.ndarray:
    import skimage as sk

    return _to_u8(sk.util.random_noise(_unit(img), mode="s&p", amount=c, rng=rng))


def shot_noise(img: Image.Image, c: float, rng: np.random.Generator) -> np.ndarray:
    return _to_u8(rng.poisson(_unit(img) * c) / c)


def pixelate(img: Image.Image, c: float, rng: np.random.Generator) -> np.ndarray:
    w, h = img.size
    small = img.resize((int(w * c), int(h * c)), Image.BOX)
    return np.asarray(small.resize((w, h), Image.BOX))


def jpeg_compression(img: Image.Image, c: int, rng: np.random.Generator) -> np.ndarray:
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", quality=int(c))
    return np.asarray(Image.open(buffer))


def gaussian_blur(img: Image.Image, c: int, rng: np.random.Generator) -> np.ndarray:
    """torchvision's ``gaussian_blur(img, kernel_size=c)``: sigma 0.3 ((c - 1) / 2 - 1) + 0.8,
    reflect padding, rounded back to uint8."""
    k = int(c)
    sigma = 0.3 * ((k - 1) * 0.5 - 1) + 0.8
    half = (k - 1) * 0.5
    xs = torch.linspace(-half, half, k, dtype=torch.float64)
    kernel1d = torch.exp(-0.5 * (xs / sigma) ** 2)
    kernel1d = kernel1d / kernel1d.sum()
    x = torch.from_numpy(np.asarray(img, dtype=np.float64))
    x = x[None, None] if x.ndim == 2 else x.permute(2, 0, 1)[:, None]
    x = torch.nn.functional.pad(x, (k // 2, k // 2, k // 2, k // 2), mode="reflect")
    x = torch.nn.functional.conv2d(x, kernel1d.view(1, 1, 1, k))
    x = torch.nn.functional.conv2d(x, kernel1d.view(1, 1, k, 1))
    out = x.round().clamp(0, 255).to(torch.uint8)[:, 0]
    return out[0].numpy() if out.shape[0] == 1 else out.permute(1, 2, 0).numpy()


def brightness(img: Image.Image, c: float, rng: np.random.Generator) -> np.ndarray:
    return np.asarray(ImageEnhance.Brightness(img).enhance(c)).astype(np.uint8)


def contrast(img: Image.Image, c: float, rng: np.random.Generator) -> np.ndarray:
    return np.asarray(ImageEnhance.Contrast(img).enhance(c)).astype(np.uint8)


def gamma_correction(img: Image.Image, c: float, rng: np.random.Generator) -> np.ndarray:
    """torchvision's ``adjust_gamma(img, c, gain=1)`` on a PIL image (its lookup table)."""
    table = [int((255 + 1 - 1e-3) * pow(v / 255.0, c)) for v in range(256)]
    return np.asarray(img.point(table * len(img.getbands())))


@dataclass(frozen=True)
class CorruptionSpec:
    """One MedMNIST-C corruption: its function and the parameter of each of 5 severities."""

    name: str
    fn: Corruption
    params: tuple


CHEST_XRAY: tuple[CorruptionSpec, ...] = (
    CorruptionSpec("pixelate", pixelate, (0.8, 0.7, 0.6, 0.5, 0.40)),
    CorruptionSpec("jpeg_compression", jpeg_compression, (50, 30, 15, 10, 7)),
    CorruptionSpec("gaussian_noise", gaussian_noise, (0.04, 0.05, 0.06, 0.07, 0.08)),
    CorruptionSpec("speckle_noise", speckle_noise, (0.05, 0.07, 0.10, 0.15, 0.20)),
    CorruptionSpec("impulse_noise", impulse_noise, (0.005, 0.01, 0.013, 0.017, 0.02)),
    CorruptionSpec("shot_noise", shot_noise, (300, 200, 150, 100, 80)),
    CorruptionSpec("gaussian_blur", gaussian_blur, (3, 5, 7, 9, 11)),
    CorruptionSpec("brightness_up", brightness, (1.1, 1.2, 1.3, 1.4, 1.5)),
    CorruptionSpec("brightness_down", brightness, (0.9, 0.8, 0.7, 0.6, 0.5)),
    CorruptionSpec("contrast_up", contrast, (1.1, 1.2, 1.3, 1.4, 1.6)),
    CorruptionSpec("contrast_down", contrast, (0.9, 0.8, 0.7, 0.6, 0.4)),
    CorruptionSpec("gamma_corr_up", gamma_correction, (1.1, 1.2, 1.3, 1.4, 1.6)),
    CorruptionSpec("gamma_corr_down", gamma_correction, (0.9, 0.8, 0.7, 0.6, 0.4)),
)
"""MedMNIST-C's PneumoniaMNIST (chest X-ray) set, severities 1..5 (its registry lists a 6th
blur kernel, 13, that severities 1..5 never use)."""


def corrupt(images: np.ndarray, spec: CorruptionSpec, severity: int,
            seed: int = 0) -> np.ndarray:
    """``images`` float (N, C, H, W) in [0, 1] (C = 1 or 3) corrupted by ``spec`` at
    ``severity`` in 1..5; float32, same shape, in [0, 1] (8-bit levels)."""
    if not 1 <= severity <= SEVERITIES:
        raise ValueError(f"severity {severity} is not in 1..{SEVERITIES}")
    rng = np.random.default_rng(seed)
    u8 = np.round(np.clip(images, 0, 1) * 255).astype(np.uint8)
    out = np.empty(images.shape, dtype=np.float32)
    for i, img in enumerate(u8):
        pil = Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0))
        res = np.asarray(spec.fn(pil, spec.params[severity - 1], rng), dtype=np.float32)
        out[i] = (res[None] if res.ndim == 2 else res.transpose(2, 0, 1)) / 255.0
    return out


def corruption_accuracy(predict: Callable[[torch.Tensor], torch.Tensor], images: np.ndarray,
                        labels: np.ndarray, specs: tuple[CorruptionSpec, ...] = CHEST_XRAY,
                        seed: int = 0) -> dict[str, float]:
    """Accuracy under every corruption x severity: ``corruption_<name>_s<k>_acc``, their mean
    ``corruption_acc_mean`` and minimum ``corruption_acc_worst`` (all in [0, 1]).

    ``predict`` maps float images (N, C, H, W) in [0, 1] to logits (N, K); ``labels`` (N,)
    (multi-hot (N, K): macro accuracy at sigmoid >= 0.5, the mean over the N x K decisions).
    """
    labels = np.asarray(labels)
    out: dict[str, float] = {}
    for j, spec in enumerate(specs):
        for severity in range(1, SEVERITIES + 1):
            x = torch.from_numpy(corrupt(images, spec, severity, seed + 1000 * j + severity))
            logits = predict(x).cpu()
            pred = (logits >= 0).numpy() if labels.ndim == 2 else logits.argmax(1).numpy()
            out[f"corruption_{spec.name}_s{severity}_acc"] = float((pred == labels).mean())
    values = list(out.values())
    return out | {"corruption_acc_mean": float(np.mean(values)),
                  "corruption_acc_worst": float(np.min(values))}
