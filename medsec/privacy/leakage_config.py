"""Settings of the one-run DP audit (``privacy.canary``) and of gradient inversion against a
federated client update (``federated.gradient_inversion``).

Light (pydantic only): ``medsec.config`` imports it on every run; the attacks themselves live
in :mod:`medsec.privacy.canary_audit` and :mod:`medsec.privacy.gradient_inversion`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from medsec.config_base import StrictModel

LeakageSetting = Literal["plain", "client_dp", "secaggplus", "ckks"]


class CanaryAuditConfig(StrictModel):
    """One-run DP audit (Steinke, Nasr and Jagielski 2023) with white-box Dirac gradient
    canaries.

    ``num_canaries`` (m) canaries, each included in the run with probability 1/2; an included
    canary is Poisson-sampled like a training record at every step and adds a gradient of norm
    ``max_grad_norm`` on its own parameter coordinate. The auditor guesses "in" for the ``k``
    highest and "out" for the ``k`` lowest scores, for every ``k`` of ``guesses`` (fractions of
    m per side), and reports the largest 95 % lower bound on epsilon with the confidence split
    across the ``k`` values (Bonferroni), so the maximum stays a valid bound. With ``enabled``
    the privacy stage audits every sweep point (non-private baseline: claimed epsilon
    infinite) in one extra training run of the same recipe with the canaries; ``epochs`` None =
    the recipe's epochs. The same settings drive ``deepfake.canary`` (the DP-GAN's
    discriminator at each epsilon; ``epochs`` None = ``deepfake.dp.epochs``) and
    ``federated.canary`` (hospital 0's first round of client DP; None = ``local_epochs``;
    its kind, count and guesses also drive the canary audit of every federated recipe audit,
    ``federated.recipe_audit.canary``, whatever ``enabled`` says).
    ``kind``: ``gradient`` (white-box Dirac gradient canaries, the strongest) or ``input``
    (``num_canaries`` crafted binary-noise images with random labels added to the training
    data, each with probability 1/2, scored by their loss after training: audits the whole
    pipeline from the data loader on; privacy and federated stages; the DP-GAN audit takes
    gradient canaries only).
    """

    enabled: bool = False
    kind: Literal["gradient", "input"] = "gradient"
    num_canaries: int = Field(default=200, ge=10, le=100000)
    guesses: tuple[float, ...] = (0.05, 0.1, 0.25)
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    epochs: int | None = Field(default=None, ge=1, le=1000)
    seed: int = 0

    @field_validator("guesses")
    @classmethod
    def _fractions(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(not 0 < f <= 0.5 for f in value) or len(set(value)) != len(value):
            raise ValueError(f"need distinct fractions in (0, 0.5], got {list(value)}")
        return tuple(sorted(value))


class GradientInversionConfig(StrictModel):
    """Inverting Gradients (Geiping et al. 2020) against one client's update.

    The client update is one local SGD step on a batch of each size in ``batch_sizes`` (the
    server divides by the known learning rate to get the gradient). The attacker optimises
    ``steps`` of Adam (``lr``, on the sign of the gradient) on dummy images to match the
    update's direction (cosine) with total-variation weight ``tv_weight``; labels are
    recovered from the last layer (iDLG) for batch size 1 and assumed known above.
    ``settings``: ``plain`` (the update itself), ``client_dp`` (per-example clipping to
    ``dp_max_grad_norm`` and Gaussian noise ``dp_noise_multiplier``), ``secaggplus`` (the server
    only sees the sum of ``secagg_clients`` clients' updates) and ``ckks`` (ciphertext only:
    reported as not applicable). ``image_size`` None keeps the data's size (the attack is
    cheap below ~32 px).
    """

    enabled: bool = False
    batch_sizes: tuple[int, ...] = (1, 4, 16)
    settings: tuple[LeakageSetting, ...] = ("plain", "client_dp", "secaggplus", "ckks")
    steps: int = Field(default=300, ge=1, le=100000)
    lr: float = Field(default=0.1, gt=0.0)
    tv_weight: float = Field(default=1e-2, ge=0.0)
    dp_noise_multiplier: float = Field(default=1.0, ge=0.0)
    dp_max_grad_norm: float = Field(default=1.0, gt=0.0)
    secagg_clients: int = Field(default=3, ge=2, le=100)
    image_size: int | None = Field(default=None, ge=8, le=256)
    seed: int = 0

    @field_validator("batch_sizes")
    @classmethod
    def _sizes(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(b < 1 or b > 256 for b in value) or len(set(value)) != len(value):
            raise ValueError(f"need distinct batch sizes in [1, 256], got {list(value)}")
        return tuple(sorted(value))

    @field_validator("settings")
    @classmethod
    def _settings(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or len(set(value)) != len(value):
            raise ValueError(f"need distinct settings, got {list(value)}")
        return value
