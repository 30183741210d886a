"""``federated:`` section of the config: federation size, partitioning, strategy, privacy,
secure aggregation, malicious clients and injected faults.

Every field is validated; cross-field checks name the field they reject, e.g.
``federated.attack.malicious_clients: client 7 does not exist (num_clients=3)``.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator, model_validator

from medsec.config_base import StrictModel
from medsec.privacy.leakage_config import CanaryAuditConfig, GradientInversionConfig

Partition = Literal["iid", "label_skew", "dirichlet", "site"]
StrategyName = Literal["fedavg", "fedprox", "krum", "trimmed_mean", "median"]
SecureAggregation = Literal["none", "secaggplus", "ckks"]
Runtime = Literal["inprocess", "ray"]
ROBUST_STRATEGIES = ("krum", "trimmed_mean", "median")


class PoisoningConfig(StrictModel):
    """Malicious hospitals (by partition id, 0-based).

    ``label_flip``: the client trains on labels ``K-1-y``. ``backdoor``: the client stamps a
    white ``trigger_size`` square (bottom-right corner) on ``poison_fraction`` of its training
    images and relabels them ``backdoor_target``. A malicious client sends
    ``global + boost * (local - global)``: ``boost`` None = the number of clients for a
    backdoor (model replacement, Bagdasaryan et al. 2020) and 1 (plain) for label flipping.
    Malicious clients behave honestly before round ``from_round`` (model replacement is meant
    for a model that has nearly converged).
    """

    kind: Literal["none", "label_flip", "backdoor"] = "none"
    malicious_clients: tuple[int, ...] = ()
    from_round: int = Field(default=1, ge=1)
    boost: float | None = Field(default=None, ge=1.0, le=1000.0)
    backdoor_target: int = Field(default=0, ge=0)
    poison_fraction: float = Field(default=0.5, gt=0.0, le=1.0)
    trigger_size: int = Field(default=3, ge=1, le=16)

    @model_validator(mode="after")
    def _consistent(self) -> PoisoningConfig:
        if self.kind != "none" and not self.malicious_clients:
            raise ValueError(f"malicious_clients: kind={self.kind!r} needs at least one client")
        if len(set(self.malicious_clients)) != len(self.malicious_clients):
            raise ValueError("malicious_clients: duplicate client ids")
        if any(c < 0 for c in self.malicious_clients):
            raise ValueError("malicious_clients: client ids are >= 0")
        return self


class ClientDPConfig(StrictModel):
    """Client-side DP-SGD (Opacus) inside every hospital: a per-client (example-level) epsilon.

    Exactly one of ``noise_multiplier`` / ``target_epsilon`` when enabled; a target is met
    over all rounds (``rounds * local_epochs`` epochs of DP-SGD). ``delta`` None = 1/(10 N_k).
    Needs a DP-compatible model (``model.norm=group``).
    """

    enabled: bool = False
    noise_multiplier: float | None = Field(default=None, gt=0.0)
    target_epsilon: float | None = Field(default=None, gt=0.0)
    max_grad_norm: float = Field(default=1.0, gt=0.0)
    delta: float | None = Field(default=None, gt=0.0, lt=1.0)
    accountant: Literal["prv", "rdp", "gdp"] = "rdp"
    max_physical_batch_size: int = Field(default=128, gt=0)

    @model_validator(mode="after")
    def _one_noise_source(self) -> ClientDPConfig:
        if self.enabled and (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise ValueError("noise_multiplier: client DP needs exactly one of noise_multiplier "
                             "and target_epsilon")
        return self


class CentralDPConfig(StrictModel):
    """Flower central DP (user-level): the server clips each client's update to
    ``clipping_norm`` (fixed, or adapted towards the ``target_quantile`` of update norms) and
    adds Gaussian noise ``noise_multiplier * clip / n`` to the (uniform) average.

    Epsilon is user-level, composed over rounds with every client sampled (no amplification);
    ``delta`` None = 1/(10 num_clients). Adaptive clipping spends part of the noise on the
    count of clipped updates (std ``clipped_count_stddev``; None = max(clients/20,
    noise_multiplier), since Flower needs ``2 * clipped_count_stddev > noise_multiplier``); the
    update noise is raised so the pair is as private as ``noise_multiplier`` alone (Andrew et
    al. 2021). Needs a model without BatchNorm running statistics (``model.norm=group``).
    """

    mode: Literal["off", "fixed", "adaptive"] = "off"
    noise_multiplier: float = Field(default=0.5, gt=0.0)
    clipping_norm: float = Field(default=1.0, gt=0.0)
    target_quantile: float = Field(default=0.5, ge=0.0, le=1.0)
    clip_lr: float = Field(default=0.2, gt=0.0)
    clipped_count_stddev: float | None = Field(default=None, gt=0.0)
    delta: float | None = Field(default=None, gt=0.0, lt=1.0)


class HEConfig(StrictModel):
    """TenSEAL CKKS parameters (``secure_aggregation=ckks``): ring degree and scale bits."""

    poly_modulus_degree: Literal[8192, 16384] = 8192
    scale_bits: int = Field(default=40, ge=20, le=50)


class FaultConfig(StrictModel):
    """Injected faults: ``crash_clients`` raise inside their ClientApp in ``crash_round``."""

    crash_clients: tuple[int, ...] = ()
    crash_round: int = Field(default=1, ge=1)


class FederatedRecipeAuditConfig(StrictModel):
    """Recipe audit of the federation (``medsec.audit=recipe``, the privacy stage's protocol:
    ``privacy.audit`` gives the pool, reference-model count, declared attack and intervals).
    With ``enabled`` the federated stage trains the configured federation on a random half of
    the train+val pool, and ``privacy.audit.num_reference`` reference federations on other
    halves, and audits membership of the union of the clients' data; plus the same federation
    with client DP at each target epsilon of ``client_dp_epsilons`` (one child run each).
    ``canary``: each audited recipe also gets the one-run DP audit (Steinke et al. 2023) of
    hospital 0's first round on its target's pool half, with ``federated.canary``'s settings
    (kind, count, guesses; its ``enabled`` governs only the stage's own audit), so the child
    run shows ``epsilon_audit_lower`` beside the claimed ``epsilon`` (none without DP)."""

    enabled: bool = False
    client_dp_epsilons: tuple[float, ...] = ()
    canary: bool = True

    @field_validator("client_dp_epsilons")
    @classmethod
    def _positive(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not e > 0 for e in value) or len(set(value)) != len(value):
            raise ValueError(f"need distinct target epsilons > 0, got {list(value)}")
        return tuple(sorted(value))


class FederatedConfig(StrictModel):
    """Federated learning across ``num_clients`` simulated hospitals (see README).

    ``min_fit_clients`` None = every sampled client must answer; with fewer successful
    replies a round fails with an error naming the failed clients. ``assumed_malicious`` is
    the ``f`` Krum tolerates (needs ``num_clients >= 2 f + 3``). ``gradient_inversion``: the
    server's reconstruction attack on one client update (off by default; see README).
    ``canary``: one-run DP audit (Steinke et al. 2023) of hospital 0's client DP (one round of
    its local DP-SGD with gradient canaries); runs only when ``client_dp`` is enabled.
    ``recipe_audit``: membership-inference audit of the federated recipe (and of it with client
    DP at chosen epsilons) with the privacy stage's protocol (:class:`FederatedRecipeAuditConfig`).
    """

    num_clients: int = Field(default=3, ge=1, le=1000)
    rounds: int = Field(default=2, ge=1, le=1000)
    local_epochs: int = Field(default=1, ge=1, le=100)
    partition: Partition = "iid"
    dirichlet_alpha: float = Field(default=0.5, gt=0.0)
    classes_per_client: int = Field(default=1, ge=1)
    strategy: StrategyName = "fedavg"
    proximal_mu: float = Field(default=0.01, ge=0.0)
    trim_beta: float = Field(default=0.2, ge=0.0, lt=0.5)
    assumed_malicious: int = Field(default=1, ge=0)
    fraction_fit: float = Field(default=1.0, gt=0.0, le=1.0)
    min_fit_clients: int | None = Field(default=None, ge=1)
    secure_aggregation: SecureAggregation = "none"
    runtime: Runtime = "inprocess"
    compare_centralized: bool = True
    attack: PoisoningConfig = PoisoningConfig()
    client_dp: ClientDPConfig = ClientDPConfig()
    central_dp: CentralDPConfig = CentralDPConfig()
    he: HEConfig = HEConfig()
    faults: FaultConfig = FaultConfig()
    gradient_inversion: GradientInversionConfig = GradientInversionConfig()
    canary: CanaryAuditConfig = CanaryAuditConfig()
    recipe_audit: FederatedRecipeAuditConfig = FederatedRecipeAuditConfig()

    @model_validator(mode="after")
    def _consistent(self) -> FederatedConfig:
        n = self.num_clients
        for field, ids in (("attack.malicious_clients", self.attack.malicious_clients),
                           ("faults.crash_clients", self.faults.crash_clients)):
            bad = [c for c in ids if not 0 <= c < n]
            if bad:
                raise ValueError(f"{field}: client {bad[0]} does not exist (num_clients={n})")
        if self.min_fit_clients is not None and self.min_fit_clients > n:
            raise ValueError(f"min_fit_clients: {self.min_fit_clients} > num_clients={n}")
        if self.strategy == "trimmed_mean" and int(self.trim_beta * n) < 1:
            raise ValueError(f"trim_beta: {self.trim_beta} x {n} clients trims nothing (need "
                             f"trim_beta >= {1 / n:.3g}); use more clients or a larger trim_beta")
        if self.strategy == "krum" and n < 2 * self.assumed_malicious + 3:
            raise ValueError(f"assumed_malicious: Krum with f={self.assumed_malicious} needs "
                             f"num_clients >= 2f+3 = {2 * self.assumed_malicious + 3}, got {n}")
        if self.secure_aggregation != "none" and self.strategy in ROBUST_STRATEGIES:
            raise ValueError(f"secure_aggregation: {self.secure_aggregation} only reveals the sum "
                             f"of updates; strategy {self.strategy!r} needs each client's update "
                             "(use fedavg or fedprox)")
        if self.central_dp.mode != "off" and self.strategy in ROBUST_STRATEGIES:
            raise ValueError("central_dp.mode: central DP noise is calibrated for averaging, not "
                             f"for strategy {self.strategy!r} (use fedavg or fedprox)")
        if self.central_dp.mode != "off" and self.secure_aggregation != "none":
            raise ValueError("central_dp.mode: server-side clipping needs each client's "
                             "plaintext update, which "
                             f"secure_aggregation={self.secure_aggregation!r} hides")
        if self.client_dp.enabled and self.strategy == "fedprox" and self.proximal_mu > 0:
            raise ValueError("client_dp.enabled: DP-SGD per-sample gradients do not include "
                             "FedProx's proximal term; use strategy=fedavg (or proximal_mu=0)")
        if self.secure_aggregation == "secaggplus" and (
            self.client_dp.enabled or self.attack.kind != "none" or self.strategy != "fedavg"
        ):
            raise ValueError("secure_aggregation: secaggplus runs Flower's legacy SecAgg+ "
                             "workflow with plain FedAvg only (no client DP, attacks or FedProx)")
        if self.secure_aggregation != "none" and math.ceil(self.fraction_fit * n - 1e-9) < 2:
            raise ValueError(f"secure_aggregation: {self.secure_aggregation} needs at least 2 "
                             "clients per round (an aggregate of one is that client's update)")
        cdp = self.central_dp
        if (cdp.mode == "adaptive" and cdp.clipped_count_stddev is not None
                and cdp.noise_multiplier >= 2 * cdp.clipped_count_stddev):
            raise ValueError(f"central_dp.clipped_count_stddev: must exceed noise_multiplier / 2 = "
                             f"{cdp.noise_multiplier / 2:g} (got {cdp.clipped_count_stddev:g})")
        if self.runtime == "ray" and self.secure_aggregation == "ckks":
            raise ValueError("runtime: ckks is supported in-process and with the deployment "
                             "apps, not under Ray")
        return self
