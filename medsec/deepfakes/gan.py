"""Training a class-conditional GAN in Lightning (manual optimisation), optionally with a
differentially private discriminator.

Losses are the non-saturating GAN losses (binary cross-entropy on logits). Each training step
first updates the discriminator on the real batch and a batch of ``batch_size`` fakes (one
forward pass over both, so Opacus sees one batch: every row is clipped on its own, a real
image only ever influences its own row, and the fake rows do not depend on who is in the
data, so one record moves the clipped sum by at most ``max_grad_norm``), then updates the
generator through the frozen discriminator (Opacus hooks off: the generator step touches no
real data).

Privacy (``dp`` settings): only the discriminator sees real images, so a DP-SGD
discriminator makes the generator, and everything sampled from it, differentially private
by post-processing (as in DP-GAN, Xie et al. 2018, and Opacus' DCGAN example).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import Tensor
from torch.utils.data import DataLoader

from medsec.data.types import ImageDataset
from medsec.deepfakes.config import GanConfig
from medsec.deepfakes.networks import (
    ConditionalDiscriminator,
    ConditionalGenerator,
    ConditionedImages,
    GanArch,
    condition_input,
)
from medsec.privacy.config import DPConfig
from medsec.privacy.dp import DPState, make_private
from medsec.privacy.plan import plan_dp
from medsec.training.fit import make_trainer, seed_everything


class GanModule(L.LightningModule):
    """Conditional GAN: ``generator`` and ``discriminator`` trained with two Adam optimizers.

    ``external_d_optimizer`` (set by :func:`private_discriminator`) replaces the
    discriminator's optimizer by a DP one; ``dp_hooks`` are its Opacus hooks, switched off
    during the generator step. ``history`` holds per-epoch mean losses.
    """

    def __init__(self, arch: GanArch, cfg: GanConfig) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.arch = arch
        self.cfg = cfg
        self.generator = ConditionalGenerator(arch)
        self.discriminator = ConditionalDiscriminator(arch)
        self.external_d_optimizer: torch.optim.Optimizer | None = None
        self.dp_hooks: Any = None
        self.history: list[dict[str, float]] = []
        self._losses: list[tuple[float, float]] = []

    def build_d_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.discriminator.parameters(), lr=self.cfg.lr_discriminator,
                                betas=(0.5, 0.999))

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        g_opt = torch.optim.Adam(self.generator.parameters(), lr=self.cfg.lr_generator,
                                 betas=(0.5, 0.999))
        d_opt = self.external_d_optimizer or self.build_d_optimizer()
        return [g_opt, d_opt]

    def discriminator_batch(self, real: Tensor) -> tuple[Tensor, Tensor]:
        """Discriminator loss (mean BCE: real rows -> 1, fake rows -> 0, one pass, one Opacus
        batch) on ``real`` (N, C + K, H, W) and ``max(2, cfg.batch_size)`` fresh fakes, and
        those conditioned fakes (M, C + K, H, W) (the generator step reuses them).

        The fake count is fixed, not N: a Poisson batch's size depends on who is in the data,
        and fakes that followed it would make one record move two clipped rows (2C).
        """
        m, k = max(2, self.cfg.batch_size), self.arch.num_classes
        fake_labels = torch.randint(0, k, (m,))
        fake = condition_input(self.generator(torch.randn(m, self.arch.latent_dim), fake_labels),
                               fake_labels, k)
        logits = self.discriminator.score(torch.cat([real, fake.detach()]))
        targets = torch.cat([torch.ones(len(real)), torch.zeros(len(fake))])
        return F.binary_cross_entropy_with_logits(logits, targets), fake

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        real, _ = batch  # conditioned real images (N, C + K, H, W) from ConditionedImages
        g_opt, d_opt = self.optimizers()  # type: ignore[misc]
        d_loss, fake = self.discriminator_batch(real)
        d_opt.zero_grad()
        self.manual_backward(d_loss)
        d_opt.step()
        # Generator: fool the frozen discriminator (no real data, no per-sample gradients).
        self.toggle_optimizer(g_opt)
        with self._dp_hooks_off():
            g_logits = self.discriminator.score(fake)
            g_loss = F.binary_cross_entropy_with_logits(g_logits, torch.ones(len(fake)))
            g_opt.zero_grad()
            self.manual_backward(g_loss)
        g_opt.step()
        self.untoggle_optimizer(g_opt)
        self._losses.append((float(d_loss.detach()), float(g_loss.detach())))

    @contextmanager
    def _dp_hooks_off(self) -> Iterator[None]:
        if self.dp_hooks is None:
            yield
            return
        self.dp_hooks.disable_hooks()
        try:
            yield
        finally:
            self.dp_hooks.enable_hooks()

    def on_train_epoch_end(self) -> None:
        if self._losses:
            d, g = zip(*self._losses, strict=True)
            self.history.append({"epoch": float(self.current_epoch),
                                 "d_loss": sum(d) / len(d), "g_loss": sum(g) / len(g)})
        self._losses.clear()


@contextmanager
def private_discriminator(
    module: GanModule, loader: DataLoader, settings: DPConfig, epochs: int
) -> Iterator[tuple[DataLoader, DPState]]:
    """Make the discriminator of ``module`` train with DP-SGD inside the ``with`` block.

    Uses :func:`medsec.privacy.dp.make_private` (Opacus hooks on the discriminator network,
    Poisson sampling, noise calibrated to ``settings.target_epsilon`` over ``epochs``) and
    yields the Poisson loader to train on and the :class:`DPState` (``state.epsilon()``).
    """
    plan = plan_dp(settings, len(loader.dataset), len(loader), epochs)  # type: ignore[arg-type]
    optimizer, dp_loader, state = make_private(module.discriminator.net, module.build_d_optimizer(),
                                               loader, plan, criterion=torch.nn.BCEWithLogitsLoss())
    module.external_d_optimizer = optimizer
    module.dp_hooks = state.hooks
    try:
        yield dp_loader, state
    finally:
        module.external_d_optimizer = None
        module.dp_hooks = None
        state.hooks.cleanup()


@dataclass
class TrainedGan:
    """A trained generator (eval mode) with its architecture, history and privacy spent."""

    generator: ConditionalGenerator
    arch: GanArch
    history: list[dict[str, float]]
    seconds: float
    seed: int
    epsilon: float | None = None  # None: not private
    delta: float | None = None
    dp_params: dict[str, Any] | None = None


def gan_arch(cfg: GanConfig, image_shape: Sequence[int], num_classes: int) -> GanArch:
    """The :class:`GanArch` of config ``cfg`` for images (C, H, W) and ``num_classes``."""
    c, h, w = (int(s) for s in image_shape)
    arch = GanArch(image_shape=(c, h, w), num_classes=int(num_classes),
                   latent_dim=cfg.latent_dim, generator_channels=tuple(cfg.generator_channels),
                   discriminator_channels=tuple(cfg.discriminator_channels),
                   kernel_size=cfg.kernel_size)
    arch.check()
    return arch


def train_gan(
    data: ImageDataset, num_classes: int, cfg: GanConfig, dp: DPConfig | None = None,
    epochs: int | None = None, callbacks: Sequence[Callback] = (), progress: bool = False,
) -> TrainedGan:
    """Train a conditional GAN on ``data`` (images (N, C, H, W) in [0, 1], labels (N,)).

    Seeded by ``cfg.seed`` (same data and config -> same generator). With ``dp`` the
    discriminator is trained with DP-SGD and the result carries the epsilon spent.
    """
    if len(data) < 2:
        raise ValueError(f"a GAN needs at least 2 training images, got {len(data)}")
    epochs = epochs or cfg.epochs
    seed_everything(cfg.seed)
    module = GanModule(gan_arch(cfg, data.images.shape[1:], num_classes), cfg)
    loader = DataLoader(ConditionedImages(data, num_classes), shuffle=True, num_workers=0,
                        batch_size=min(cfg.batch_size, len(data)),
                        generator=torch.Generator().manual_seed(cfg.seed))
    start = time.perf_counter()
    state: DPState | None = None
    if dp is None:
        make_trainer(epochs, callbacks, progress).fit(module, train_dataloaders=loader)
    else:
        with private_discriminator(module, loader, dp, epochs) as (dp_loader, state), \
                warnings.catch_warnings():
            # The conditioned real input needs no gradient; torch warns about it on every
            # backward through the hooked first layer. Harmless for per-sample gradients.
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            make_trainer(epochs, callbacks, progress).fit(module, train_dataloaders=dp_loader)
    seconds = time.perf_counter() - start
    generator = module.generator.eval()
    return TrainedGan(generator=generator, arch=module.arch, history=list(module.history),
                      seconds=seconds, seed=cfg.seed,
                      epsilon=None if state is None else state.epsilon(),
                      delta=None if state is None else state.plan.delta,
                      dp_params=None if state is None else state.plan.params())
