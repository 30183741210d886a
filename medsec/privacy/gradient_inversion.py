"""Gradient inversion against a federated client update (Inverting Gradients, Geiping et al.
2020; label recovery of iDLG, Zhao et al. 2020, for a single image).

Threat model: an honest-but-curious server that knows the global weights it sent, the
learning rate, and receives one client's update after ONE local SGD step on a batch of B
private images (FedSGD), i.e. ``-lr * g`` with ``g`` the batch's mean cross-entropy gradient;
dividing by ``-lr`` gives ``g``. (Several local steps, as in FedAvg with epochs >= 1, make the
attack harder; this is the standard strong-attacker setting.) The attacker optimises dummy
images ``x`` in [0, 1] (Adam on the *sign* of the gradient, step decay at 3/8, 5/8, 7/8 of the
steps, as in the paper) to minimise ``1 - cos(grad(x, y), g) + tv_weight * TV(x)`` over all
parameters at once. Labels: recovered from the last layer's bias gradient for B = 1 (the only
negative entry is the true class), assumed known for B > 1 (the paper's setting).

Settings (what the server sees):

- ``plain``: ``g`` itself.
- ``client_dp``: a DP-SGD step: each example's gradient clipped to ``C``, summed, plus
  ``N(0, (sigma C)^2)`` per coordinate, divided by B.
- ``secaggplus``: only the SUM of K clients' updates (each on its own B images); the attack
  reconstructs K * B images from it and is scored against all K * B private images.
- ``ckks``: ciphertexts under a key the server lacks: no gradient, so the attack does not
  apply (reported with the reason, no number). The decrypting hospital sees only an
  aggregate of at least two updates, i.e. the ``secaggplus`` case.

Scores: PSNR and SSIM (MONAI ``PSNRMetric``/``SSIMMetric``, data range 1) between each private
image and its reconstruction, images matched by the assignment that minimises the total MSE
(Hungarian); beside them the same scores of uniform random images (the no-leak baseline).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from medsec.metrics.image_quality import total_variation
from medsec.privacy.leakage_config import GradientInversionConfig

CKKS_REASON = ("not applicable: under CKKS the server holds only ciphertexts under the "
               "hospitals' key (it has no secret key), so there is no gradient to invert; the "
               "decrypting hospital sees only an aggregate of >= 2 updates (as secaggplus)")


# --------------------------------------------------------------------------- gradients


def _params(net: nn.Module) -> list[nn.Parameter]:
    return [p for p in net.parameters() if p.requires_grad]


def batch_gradient(net: nn.Module, images: Tensor, labels: Tensor,
                   create_graph: bool = False) -> list[Tensor]:
    """Gradient of the mean cross-entropy of ``net`` on ``images`` (B,C,H,W) in [0,1] and
    ``labels`` (B,) w.r.t. every trainable parameter (one tensor per parameter)."""
    loss = F.cross_entropy(net(images), labels)
    return list(torch.autograd.grad(loss, _params(net), create_graph=create_graph))


def dp_gradient(net: nn.Module, images: Tensor, labels: Tensor, max_grad_norm: float,
                noise_multiplier: float, generator: torch.Generator) -> list[Tensor]:
    """One DP-SGD step's gradient: per-example gradients clipped to ``max_grad_norm`` (L2 over
    all parameters), summed, plus Gaussian noise of std ``noise_multiplier * max_grad_norm``
    per coordinate, divided by the batch size B."""
    total = [torch.zeros_like(p) for p in _params(net)]
    for i in range(len(images)):
        grads = batch_gradient(net, images[i:i + 1], labels[i:i + 1])
        norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
        scale = min(1.0, max_grad_norm / (float(norm) + 1e-6))
        for t, g in zip(total, grads, strict=True):
            t += scale * g
    std = noise_multiplier * max_grad_norm
    return [(t + std * torch.randn(t.shape, generator=generator)) / len(images) for t in total]


def recover_label(grads: Sequence[Tensor], num_classes: int) -> int:
    """iDLG label of a single-image gradient: the output layer's bias gradient is
    ``softmax - onehot``, negative only at the true class (else the weight rows' sums)."""
    for g in reversed(grads):
        if g.ndim == 1 and g.numel() == num_classes:
            return int(torch.argmin(g))
        if g.ndim == 2 and g.shape[0] == num_classes:
            return int(torch.argmin(g.sum(dim=1)))
    raise ValueError(f"no output layer with {num_classes} outputs among the gradients")


# --------------------------------------------------------------------------- the attack


def invert_gradients(net: nn.Module, target: Sequence[Tensor], labels: Tensor,
                     image_shape: Sequence[int], steps: int = 300, lr: float = 0.1,
                     tv_weight: float = 1e-2, seed: int = 0) -> Tensor:
    """Images (B,C,H,W) in [0,1], B = len(labels), whose gradient through ``net`` points like
    ``target`` (cosine over all parameters) with a total-variation prior.

    ``net`` is used as given (train mode, as the client trained), never modified.
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand((len(labels), *image_shape), generator=gen).requires_grad_(True)
    target = [t.detach() for t in target]
    target_norm = torch.sqrt(sum((t ** 2).sum() for t in target))
    optimizer = torch.optim.Adam([x], lr=lr)
    milestones = [int(steps * f) for f in (3 / 8, 5 / 8, 7 / 8)]
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, gamma=0.1)
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        grads = batch_gradient(net, x, labels, create_graph=True)
        dot = sum((g * t).sum() for g, t in zip(grads, target, strict=True))
        norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
        loss = 1 - dot / (norm * target_norm + 1e-12) + tv_weight * total_variation(x)
        (grad_x,) = torch.autograd.grad(loss, x)
        x.grad = grad_x.sign()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            x.clamp_(0.0, 1.0)
    return x.detach()


# --------------------------------------------------------------------------- scoring


def match(reconstructions: Tensor, originals: Tensor) -> np.ndarray:
    """For each original (N,C,H,W) the index of its reconstruction (M >= N of them), the
    assignment of least total MSE (Hungarian)."""
    cost = torch.cdist(originals.flatten(1).double(), reconstructions.flatten(1).double()) ** 2
    rows, cols = linear_sum_assignment(cost.numpy())
    out = np.empty(len(originals), dtype=np.int64)
    out[rows] = cols
    return out


def image_scores(reconstructions: Tensor, originals: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-image PSNR (dB) and SSIM of matched pairs (both (N,C,H,W) in [0,1]), MONAI metrics
    with data range 1 (SSIM window: 7 px below 32 px, else 11)."""
    from monai.metrics import PSNRMetric, SSIMMetric

    psnr = PSNRMetric(max_val=1.0)(reconstructions, originals).reshape(-1)
    win = 7 if min(originals.shape[-2:]) < 32 else 11
    ssim = SSIMMetric(spatial_dims=2, data_range=1.0, win_size=win)(reconstructions, originals)
    return psnr.numpy().astype(float), ssim.reshape(-1).numpy().astype(float)


@dataclass
class InversionRow:
    """One (setting, batch size) result: mean PSNR/SSIM over the private images (None when
    the attack does not apply, with ``note`` saying why), the random-image baseline, label
    recovery (B = 1), seconds; ``originals``/``reconstructions`` (matched, N,C,H,W) for the
    figure."""

    setting: str
    batch_size: int
    psnr: float | None
    ssim: float | None
    psnr_random: float | None = None
    ssim_random: float | None = None
    label_correct: bool | None = None
    seconds: float = 0.0
    note: str = ""
    originals: np.ndarray | None = field(default=None, repr=False)
    reconstructions: np.ndarray | None = field(default=None, repr=False)

    @property
    def applicable(self) -> bool:
        return self.psnr is not None

    def to_dict(self) -> dict[str, Any]:
        return {"setting": self.setting, "batch_size": self.batch_size, "psnr": self.psnr,
                "ssim": self.ssim, "psnr_random": self.psnr_random,
                "ssim_random": self.ssim_random, "label_correct": self.label_correct,
                "seconds": self.seconds, "note": self.note, "applicable": self.applicable}


def _attack(net: nn.Module, target: Sequence[Tensor], originals: Tensor, labels: Tensor,
            known_labels: bool, settings: GradientInversionConfig, setting: str, b: int,
            note: str) -> InversionRow:
    start = time.perf_counter()
    label_correct = None
    if not known_labels:
        guess = recover_label(target, int(net(originals[:1]).shape[1]))
        label_correct = guess == int(labels[0])
        labels = torch.tensor([guess])
    recon = invert_gradients(net, target, labels, originals.shape[1:], settings.steps,
                             settings.lr, settings.tv_weight, settings.seed)
    recon = recon[match(recon, originals)]
    psnr, ssim = image_scores(recon, originals)
    noise = torch.rand(originals.shape, generator=torch.Generator().manual_seed(settings.seed + 7))
    psnr_r, ssim_r = image_scores(noise, originals)
    return InversionRow(setting, b, float(psnr.mean()), float(ssim.mean()), float(psnr_r.mean()),
                        float(ssim_r.mean()), label_correct, time.perf_counter() - start, note,
                        originals.numpy(), recon.numpy())


def attack_client_update(net: nn.Module, images: Tensor, labels: Tensor, setting: str,
                         settings: GradientInversionConfig,
                         others: Sequence[tuple[Tensor, Tensor]] = ()) -> InversionRow:
    """Invert one client's update on ``images`` (B,C,H,W) in [0,1], ``labels`` (B,) under
    ``setting`` (see module docstring). ``others``: the other clients' batches of the same
    size, needed for ``secaggplus`` (``settings.secagg_clients - 1`` of them)."""
    b = len(images)
    net = copy.deepcopy(net).train()
    if setting == "ckks":
        return InversionRow(setting, b, None, None, note=CKKS_REASON)
    if setting == "plain":
        target = batch_gradient(net, images, labels)
        return _attack(net, target, images, labels, b > 1, settings, setting, b,
                       "one local SGD step; labels " + ("known" if b > 1 else "recovered (iDLG)"))
    if setting == "client_dp":
        gen = torch.Generator().manual_seed(settings.seed + 11)
        target = dp_gradient(net, images, labels, settings.dp_max_grad_norm,
                             settings.dp_noise_multiplier, gen)
        return _attack(net, target, images, labels, b > 1, settings, setting, b,
                       f"DP-SGD step: clip {settings.dp_max_grad_norm:g}, noise multiplier "
                       f"{settings.dp_noise_multiplier:g}")
    if setting == "secaggplus":
        if len(others) != settings.secagg_clients - 1:
            raise ValueError(f"secaggplus needs {settings.secagg_clients - 1} other clients' "
                             f"batches, got {len(others)}")
        batches = [(images, labels), *others]
        grads = [batch_gradient(net, x, y) for x, y in batches]
        target = [sum(parts) for parts in zip(*grads, strict=True)]
        all_x = torch.cat([x for x, _ in batches])
        all_y = torch.cat([y for _, y in batches])
        # the sum of K mean gradients is K times the mean over the union: same direction
        return _attack(net, target, all_x, all_y, True, settings, setting, b,
                       f"attack on the SUM of {len(batches)} clients' updates (the server's "
                       f"view): {len(all_x)} images reconstructed, scored against all of them")
    raise ValueError(f"unknown setting {setting!r}")


def run_gradient_inversion(net: nn.Module, images: Tensor, labels: Tensor,
                           settings: GradientInversionConfig) -> list[InversionRow]:
    """Every ``settings.settings`` x ``settings.batch_sizes`` attack on batches drawn from
    ``images`` (N,C,H,W) in [0,1] / ``labels`` (N,): the target client's batch is the first B
    images of a seeded permutation, the other SecAgg clients' batches the next ones.
    Images are resized to ``settings.image_size`` first when set."""
    if settings.image_size is not None and images.shape[-1] != settings.image_size:
        images = F.interpolate(images, size=(settings.image_size,) * 2, mode="bilinear",
                               antialias=True, align_corners=False).clamp(0, 1)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(settings.seed))
    rows = []
    for b in settings.batch_sizes:
        need = b * (settings.secagg_clients if "secaggplus" in settings.settings else 1)
        if need > len(images):
            raise ValueError(f"batch size {b} needs {need} images, only {len(images)} given")
        idx = order[:need]
        x, y = images[idx[:b]], labels[idx[:b]]
        others = [(images[idx[k * b:(k + 1) * b]], labels[idx[k * b:(k + 1) * b]])
                  for k in range(1, settings.secagg_clients)] if need > b else []
        for setting in settings.settings:
            rows.append(attack_client_update(net, x, y, setting, settings, others))
    return rows


def inversion_metrics(rows: Sequence[InversionRow]) -> dict[str, float]:
    """``gradinv_psnr_<setting>_b<B>`` / ``gradinv_ssim_...`` for every applicable row, and
    ``gradinv_psnr`` / ``gradinv_ssim`` = the plain attack at the smallest batch size."""
    out: dict[str, float] = {}
    for r in rows:
        if r.applicable:
            out[f"gradinv_psnr_{r.setting}_b{r.batch_size}"] = float(r.psnr)  # type: ignore[arg-type]
            out[f"gradinv_ssim_{r.setting}_b{r.batch_size}"] = float(r.ssim)  # type: ignore[arg-type]
    plain = sorted((r for r in rows if r.setting == "plain" and r.applicable),
                   key=lambda r: r.batch_size)
    if plain:
        out["gradinv_psnr"] = float(plain[0].psnr)  # type: ignore[arg-type]
        out["gradinv_ssim"] = float(plain[0].ssim)  # type: ignore[arg-type]
        out["gradinv_psnr_random"] = float(plain[0].psnr_random)  # type: ignore[arg-type]
    return out


def write_inversion_report(rows: Sequence[InversionRow], out_dir: str | Path,
                           title: str = "gradient inversion of one client update",
                           ) -> tuple[Path, Path]:
    """``gradient_inversion.json`` (one record per row; CKKS with its reason, no number) and
    ``gradient_inversion.png`` (private images above their reconstructions, per applicable
    setting and batch size) under ``out_dir``; returns both paths."""
    from medsec.io import write_json, write_png
    from medsec.viz import reconstruction_grid

    out = Path(out_dir)
    table = write_json(out / "gradient_inversion.json",
                       {"rows": [r.to_dict() for r in rows], "metrics": inversion_metrics(rows)})
    panels = [(f"{r.setting}, batch {r.batch_size}: PSNR {r.psnr:.1f} dB, SSIM {r.ssim:.2f} "
               f"(random {r.psnr_random:.1f} dB)", r.originals, r.reconstructions)
              for r in rows if r.applicable and r.originals is not None]
    figure = reconstruction_grid(panels, title=title)  # type: ignore[arg-type]
    try:
        png = write_png(out / "gradient_inversion.png", figure)
    finally:
        import matplotlib.pyplot as plt

        plt.close(figure)
    return table, png
