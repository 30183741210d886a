"""One-run DP audit of the DP-GAN: gradient canaries in the discriminator's DP-SGD.

Only the discriminator sees real images, so its DP-SGD is the mechanism whose epsilon the
GAN claims; :func:`audit_gan` trains the GAN once with ``num_canaries`` Dirac gradient canaries
in the discriminator (:class:`medsec.privacy.canary_audit.CanaryCallback`, each canary
Poisson-sampled like a real image) and returns the lower bound beside the claimed epsilon.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from medsec.data.types import ImageDataset
from medsec.deepfakes.config import GanConfig
from medsec.deepfakes.gan import TrainedGan, train_gan
from medsec.privacy.canary_audit import CanaryAudit, CanaryCallback
from medsec.privacy.config import DPConfig


def audit_gan(data: ImageDataset, num_classes: int, cfg: GanConfig, dp: DPConfig | None,
              num_canaries: int, guesses: Sequence[float | tuple[int, int]] = (0.05, 0.1, 0.25),
              confidence: float = 0.95, seed: int = 0, epochs: int | None = None,
              ) -> tuple[CanaryAudit, TrainedGan]:
    """Train the (DP when ``dp`` is given) GAN on ``data`` with canaries in its
    discriminator; returns the audit (claimed epsilon inf without DP; delta 1/(10 N) then)
    and the trained GAN."""
    callback = CanaryCallback(num_canaries, seed=seed, target="discriminator")
    gan = train_gan(data, num_classes, cfg, dp=dp, epochs=epochs, callbacks=[callback])
    epsilon = math.inf if gan.epsilon is None else float(gan.epsilon)
    delta = gan.delta if gan.delta is not None else 1.0 / (10 * len(data))
    return callback.audit(delta, epsilon, guesses, confidence), gan
