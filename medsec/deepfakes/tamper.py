"""CT-GAN / Jekyll-style tampering: add or remove disease evidence inside a region.

A conditional inpainting network (MONAI ``UNet``) sees the image with the region blanked out,
the region mask and the *requested* class (one-hot maps), and paints the region; the output
is composited so that every pixel outside the region is exactly the original.

Training (the attacker's side): on real training images with random regions, half of the
rows ask for the true class (L1 reconstruction of the hidden pixels: learn what tissue and
lesions look like), half for another class; an *evidence* loss, the cross-entropy of the
attacker's own surrogate classifier on the composite, makes the painted region carry the
requested diagnosis. The victim classifier is never used: flips of the victim are transfer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.nets import UNet
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from medsec.data.types import ImageDataset
from medsec.deepfakes.config import TamperConfig
from medsec.deepfakes.regions import (
    borrow_regions,
    central_boxes,
    check_regions,
    lesion_regions,
)
from medsec.metrics.image_quality import psnr, ssim, total_variation
from medsec.models.guard import model_guard
from medsec.training.fit import make_trainer, seed_everything
from medsec.training.predict import predict_logits


class Inpainter(nn.Module):
    """(images (N,C,H,W) in [0,1], regions (N,H,W) bool, targets (N,)) -> tampered images.

    Pixels outside the region are returned unchanged (bit for bit).
    """

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int,
                 channels: tuple[int, ...] = (16, 32, 64)) -> None:
        super().__init__()
        c, h, w = image_shape
        factor = 2 ** (len(channels) - 1)
        if h % factor or w % factor:
            raise ValueError(f"inpainter with {len(channels)} levels needs image sides divisible "
                             f"by {factor}, got {h}x{w}")
        self.image_shape = (c, h, w)
        self.num_classes = num_classes
        self.net = UNet(spatial_dims=2, in_channels=c + 1 + num_classes, out_channels=c,
                        channels=channels, strides=(2,) * (len(channels) - 1), num_res_units=1,
                        act=("prelu", {}), norm="batch")

    def forward(self, images: Tensor, regions: Tensor, targets: Tensor) -> Tensor:
        n, _, h, w = images.shape
        region = regions.unsqueeze(1)
        cond = F.one_hot(targets.long(), self.num_classes).to(images.dtype)
        maps = cond.view(n, -1, 1, 1).expand(n, self.num_classes, h, w)
        hidden = torch.where(region, torch.zeros_like(images), images)
        painted = torch.sigmoid(self.net(torch.cat([hidden, region.to(images.dtype), maps], 1)))
        return torch.where(region, painted, images)


@dataclass
class RegionPolicy:
    """Where tampering happens: ``lesion`` (an image's own dilated lesion mask, else one
    borrowed from ``pool``) or ``box`` (a random central square of side ``box_fraction``)."""

    mode: str
    box_fraction: float
    pool: Tensor | None = None  # (P, H, W) bool lesion regions (lesion mode)

    def regions(self, own: Tensor, generator: torch.Generator) -> Tensor:
        """Regions (N, H, W) bool for images whose own lesion regions are ``own``."""
        n, h, w = own.shape
        if self.mode == "box":
            return central_boxes(n, (h, w), self.box_fraction, generator)
        out = own.clone()
        missing = ~own.flatten(1).any(dim=1)
        if missing.any():
            assert self.pool is not None
            out[missing] = borrow_regions(self.pool, int(missing.sum()), generator)
        return out


def region_policy(cfg: TamperConfig, train: ImageDataset) -> RegionPolicy:
    """The policy for ``cfg.region`` (``auto``: lesion when the data has lesion masks)."""
    has_masks = train.masks is not None and bool(np.any(train.masks))
    mode = cfg.region if cfg.region != "auto" else ("lesion" if has_masks else "box")
    if mode == "box":
        return RegionPolicy("box", cfg.box_fraction)
    if not has_masks:
        raise ValueError("tamper.region='lesion' needs a dataset with lesion masks; use 'box'")
    own = own_regions(train, cfg.dilate)
    return RegionPolicy("lesion", cfg.box_fraction, own[own.flatten(1).any(dim=1)])


def own_regions(split: ImageDataset, dilate: int) -> Tensor:
    """Each image's dilated lesion mask (N, H, W) bool (all empty without masks)."""
    n, _, h, w = split.images.shape
    if split.masks is None:
        return torch.zeros(n, h, w, dtype=torch.bool)
    return lesion_regions(torch.from_numpy(np.asarray(split.masks)), dilate)


def other_class(labels: Tensor, num_classes: int, generator: torch.Generator | None = None
                ) -> Tensor:
    """A class different from each label: ``(y + 1) % K`` (binary: the flipped diagnosis), or
    a random other class when ``generator`` is given."""
    if generator is None or num_classes == 2:
        return (labels + 1) % num_classes
    shift = torch.randint(1, num_classes, labels.shape, generator=generator)
    return (labels + shift) % num_classes


class InpaintingModule(L.LightningModule):
    """Trains an :class:`Inpainter` (reconstruction + surrogate evidence; see module doc)."""

    def __init__(self, net: Inpainter, policy: RegionPolicy, cfg: TamperConfig,
                 surrogate: nn.Module | None, seed: int) -> None:
        super().__init__()
        self.net = net
        self.policy = policy
        self.cfg = cfg
        # The attacker's frozen judge, kept out of the module tree: Lightning must not switch
        # it to training mode (BatchNorm statistics) nor save or optimise it.
        self._judge: tuple[nn.Module, ...] = ()
        if surrogate is not None:
            self._judge = (surrogate.eval().requires_grad_(False),)
        self.rng = torch.Generator().manual_seed(seed)
        self.history: list[dict[str, float]] = []
        self._losses: list[tuple[float, float]] = []

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.net.parameters(), lr=self.cfg.lr)

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels, own = batch
        k = self.net.num_classes
        regions = self.policy.regions(own, self.rng)
        flip = torch.rand(len(labels), generator=self.rng) < 0.5
        targets = torch.where(flip, other_class(labels, k, self.rng), labels)
        out = self.net(images, regions, targets)
        area = regions.flatten(1).sum(1).clamp_min(1)
        err = ((out - images).abs().sum(1) * regions).flatten(1).sum(1) / area
        keep = ~flip
        rec = err[keep].mean() if keep.any() else out.sum() * 0.0
        # TV of the change (zero outside the region, so the seam counts too): favours smooth,
        # blended edits over high-frequency (adversarial-looking) patterns.
        tv = total_variation(out - images, per_image=True) / area
        loss = rec + self.cfg.smoothness_weight * tv.mean()
        evidence = torch.zeros(())
        if self._judge and self.cfg.evidence_weight > 0:
            evidence = F.cross_entropy(self._judge[0](out), targets)
            loss = loss + self.cfg.evidence_weight * evidence
        self._losses.append((float(rec.detach()), float(evidence.detach())))
        return loss

    def on_train_epoch_end(self) -> None:
        if self._losses:
            rec, ev = zip(*self._losses, strict=True)
            self.history.append({"epoch": float(self.current_epoch),
                                 "rec_loss": float(np.mean(rec)),
                                 "evidence_loss": float(np.mean(ev))})
        self._losses.clear()


@dataclass
class TrainedInpainter:
    net: Inpainter
    policy: RegionPolicy
    history: list[dict[str, float]]
    seconds: float


def train_inpainter(
    train: ImageDataset, num_classes: int, cfg: TamperConfig, surrogate: nn.Module | None,
    seed: int,
) -> TrainedInpainter:
    """Train the conditional inpainter on real images ``train`` (the attacker's data)."""
    seed_everything(seed)
    policy = region_policy(cfg, train)
    c, h, w = (int(s) for s in train.images.shape[1:])
    net = Inpainter((c, h, w), num_classes, tuple(cfg.channels))
    module = InpaintingModule(net, policy, cfg, surrogate, seed)
    dataset = TensorDataset(torch.from_numpy(np.ascontiguousarray(train.images)),
                            torch.from_numpy(np.ascontiguousarray(train.labels)),
                            own_regions(train, cfg.dilate))
    loader = DataLoader(dataset, batch_size=min(cfg.batch_size, len(dataset)), shuffle=True,
                        generator=torch.Generator().manual_seed(seed), drop_last=len(dataset) > 1)
    start = time.perf_counter()
    make_trainer(cfg.epochs).fit(module, train_dataloaders=loader)
    return TrainedInpainter(net.eval(), policy, list(module.history),
                            time.perf_counter() - start)


@torch.no_grad()
def tamper(inpainter: Inpainter, images: Tensor, regions: Tensor, targets: Tensor) -> Tensor:
    """Tampered copies of ``images`` (N, C, H, W) in [0, 1]: region (N, H, W) repainted to show
    class ``targets`` (N,); pixels outside the region unchanged. ValueError on bad input."""
    if images.dim() != 4 or tuple(images.shape[1:]) != inpainter.image_shape:
        raise ValueError(f"images must have shape (N, {', '.join(map(str, inpainter.image_shape))})"
                         f", got {tuple(images.shape)}")
    regions = check_regions(regions, images)
    if targets.shape != (len(images),):
        raise ValueError(f"targets must have shape ({len(images)},), got {tuple(targets.shape)}")
    if len(targets) and (int(targets.min()) < 0 or int(targets.max()) >= inpainter.num_classes):
        raise ValueError(f"targets must lie in [0, {inpainter.num_classes - 1}]")
    with model_guard(inpainter):
        out = [inpainter(images[i:i + 256], regions[i:i + 256], targets[i:i + 256])
               for i in range(0, len(images), 256)]
    return torch.cat(out)


@dataclass
class TamperResult:
    """Originals and tampered images (N, C, H, W), regions (N, H, W), labels, targets (N,)."""

    originals: Tensor
    tampered: Tensor
    regions: Tensor
    labels: Tensor
    targets: Tensor


def tamper_split(trained: TrainedInpainter, split: ImageDataset, dilate: int, n: int,
                 seed: int) -> TamperResult:
    """Tamper the first ``n`` images of ``split``, each towards another class."""
    part = split.head(n)
    images, labels = part.tensors()
    rng = torch.Generator().manual_seed(seed)
    regions = trained.policy.regions(own_regions(part, dilate), rng)
    targets = other_class(labels, trained.net.num_classes, rng)
    return TamperResult(images, tamper(trained.net, images, regions, targets), regions, labels,
                        targets)


def tamper_metrics(victim: nn.Module, result: TamperResult, num_classes: int) -> dict[str, float]:
    """Effect on the victim and on the image.

    ``tamper_flip_rate``: among images the victim classified correctly, the fraction now
    classified as the requested class (``tamper_flip_rate_to_class_k`` per target class);
    ``tamper_ssim_outside``: SSIM with the region blanked in both images (1.0: rest untouched);
    ``tamper_max_change_outside``: the largest pixel change outside the region (0.0);
    ``tamper_ssim``, ``tamper_psnr``: whole-image similarity; ``tamper_region_fraction``.
    """
    before = predict_logits(victim, result.originals).argmax(1)
    after = predict_logits(victim, result.tampered).argmax(1)
    eligible = before == result.labels
    flipped = after == result.targets
    out: dict[str, float] = {
        "tamper_n": float(len(result.labels)), "tamper_n_eligible": float(eligible.sum()),
        "tamper_flip_rate": float(flipped[eligible].float().mean()) if eligible.any() else 0.0,
    }
    for k in range(num_classes):
        rows = eligible & (result.targets == k)
        if rows.any():
            out[f"tamper_flip_rate_to_class_{k}"] = float(flipped[rows].float().mean())
    region = result.regions.unsqueeze(1)
    outside_a = torch.where(region, torch.zeros_like(result.originals), result.originals)
    outside_b = torch.where(region, torch.zeros_like(result.tampered), result.tampered)
    out["tamper_ssim_outside"] = float(ssim(outside_a, outside_b).mean())
    out["tamper_max_change_outside"] = float((outside_a - outside_b).abs().max())
    out["tamper_ssim"] = float(ssim(result.originals, result.tampered).mean())
    out["tamper_psnr"] = float(psnr(result.originals, result.tampered).mean())
    out["tamper_region_fraction"] = float(result.regions.float().mean())
    return out
