"""One-run DP audit of federated client DP: canaries in one hospital's local DP-SGD.

Client DP (``federated.client_dp``) protects each hospital's images with DP-SGD inside
:func:`~medsec.federated.local.train_locally`; :func:`audit_client_dp` runs that local training
once with ``num_canaries`` Dirac gradient canaries (:class:`~medsec.privacy.canary_audit.
CanaryCallback`, each Poisson-sampled like one of the hospital's images) and returns the lower
bound beside the epsilon the hospital claims after that round. The auditor sees the weights the
hospital sends (the honest-but-curious server's view, without secure aggregation). With
``kind="input"`` the canaries are :class:`~medsec.privacy.canary_audit.InputCanaries` added to
the hospital's training images (so its N, sample rate and delta include them), scored by the
loss of the weights it sends. Without client DP (``dp`` None or disabled) the same local
training runs plain, as the non-private federation's hospitals train: the claimed epsilon is
infinite and the bound uses delta = 1/(10 N_k). :func:`audit_site` is the audit of one
federation's hospital with given canary settings (the federated recipe audit runs it on each
audited recipe's target half); :func:`audit_federation` the federated stage's gated one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from torch import nn

from medsec.data.types import ImageDataset, LoadedDataset
from medsec.federated.config import ClientDPConfig, FederatedConfig
from medsec.federated.local import LocalTraining, train_locally
from medsec.privacy.canary_audit import CanaryAudit, CanaryCallback, CanaryKind, InputCanaries
from medsec.privacy.leakage_config import CanaryAuditConfig
from medsec.privacy.plan import resolve_delta
from medsec.training.config import ClassifierRecipe


def audit_client_dp(net: nn.Module, train: ImageDataset, val: ImageDataset, num_classes: int,
                    spec: LocalTraining, dp: ClientDPConfig | None, num_canaries: int,
                    guesses: Sequence[float | tuple[int, int]] = (0.05, 0.1, 0.25),
                    confidence: float = 0.95, seed: int = 0,
                    kind: CanaryKind = "gradient") -> CanaryAudit:
    """Audit one round of a hospital's local training on ``train`` (DP-SGD when ``dp`` is
    enabled, else plain), starting from ``net`` (the global weights; trained in place), with
    ``kind`` canaries. The claimed epsilon is the client's after this round (a target epsilon
    is calibrated over ``spec.total_rounds`` rounds); inf without DP, with delta 1/(10 N)."""
    private = dp if dp is not None and dp.enabled else None
    if kind == "input":
        canaries = InputCanaries.draw(num_canaries, train.images.shape[1:], num_classes, seed)
        train = canaries.insert(train)
        result = train_locally(net, train, val, num_classes, spec, seed, dp=private)
        delta = resolve_delta(private.delta if private else None, len(train))
        return canaries.audit(net, delta, _claim(result.epsilon, private), guesses, confidence)
    callback = CanaryCallback(num_canaries, seed=seed, target="net")
    result = train_locally(net, train, val, num_classes, spec, seed, dp=private,
                           callbacks=[callback])
    delta = resolve_delta(private.delta if private else None, len(train))
    return callback.audit(delta, _claim(result.epsilon, private), guesses, confidence)


def _claim(epsilon: float, dp: ClientDPConfig | None) -> float:
    """The round's claimed epsilon: the accountant's under DP, inf without."""
    return float(epsilon) if dp is not None else math.inf


def audit_site(fed: FederatedConfig, recipe: ClassifierRecipe, data: LoadedDataset,
               canary: CanaryAuditConfig, client: int = 0) -> CanaryAudit:
    """Hospital ``client``'s first round of local training (DP-SGD under ``fed.client_dp``,
    plain otherwise) as the federation ``fed`` sets it up on ``data`` (its partition of the
    training split, its validation share, ``local_epochs`` epochs, or ``canary.epochs``),
    from the federation's seeded initial weights, audited with ``canary.num_canaries``
    canaries of ``canary.kind`` (``canary.enabled`` is not consulted)."""
    from medsec.federated.simulation import setup_federation
    from medsec.training.fit import seed_everything

    site = setup_federation(fed, recipe, data).sites[client]
    spec = site.training
    if canary.epochs is not None:
        spec = dataclasses.replace(spec, epochs=canary.epochs)
    seed_everything(site.seed)  # the federation's initial model (setup_federation's seed)
    return audit_client_dp(site.build_net(), site.train, site.val, site.num_classes, spec,
                           fed.client_dp, canary.num_canaries, canary.guesses,
                           canary.confidence, canary.seed, canary.kind)


def audit_federation(fed: FederatedConfig, recipe: ClassifierRecipe, data: LoadedDataset,
                     client: int = 0) -> CanaryAudit | None:
    """The federated stage's audit (``fed.canary``; None unless it and ``fed.client_dp`` are
    enabled): hospital ``client``'s first round of local DP-SGD, as the federation sets it up
    (its partition of the training data, its validation share, ``local_epochs`` epochs, or
    ``canary.epochs``), from the federation's seeded initial weights, with
    ``canary.num_canaries`` canaries of ``canary.kind``."""
    if not (fed.canary.enabled and fed.client_dp.enabled):
        return None
    return audit_site(fed, recipe, data, fed.canary, client)
