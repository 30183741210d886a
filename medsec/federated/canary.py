"""One-run DP audit of federated client DP: gradient canaries in one hospital's local DP-SGD.

Client DP (``federated.client_dp``) protects each hospital's images with DP-SGD inside
:func:`~medsec.federated.local.train_locally`; :func:`audit_client_dp` runs that local training
once with ``num_canaries`` Dirac gradient canaries (:class:`~medsec.privacy.canary_audit.
CanaryCallback`, each Poisson-sampled like one of the hospital's images) and returns the lower
bound beside the epsilon the hospital claims after that round. The auditor sees the weights the
hospital sends (the honest-but-curious server's view, without secure aggregation).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from medsec.data.types import ImageDataset
from medsec.federated.config import ClientDPConfig
from medsec.federated.local import LocalTraining, train_locally
from medsec.privacy.canary_audit import CanaryAudit, CanaryCallback
from medsec.privacy.plan import resolve_delta


def audit_client_dp(net: nn.Module, train: ImageDataset, val: ImageDataset, num_classes: int,
                    spec: LocalTraining, dp: ClientDPConfig, num_canaries: int,
                    guesses: Sequence[float | tuple[int, int]] = (0.05, 0.1, 0.25),
                    confidence: float = 0.95, seed: int = 0) -> CanaryAudit:
    """Audit one round of a hospital's local DP-SGD (``dp`` enabled) on ``train``, starting
    from ``net`` (the global weights; trained in place). The claimed epsilon is the client's
    after this round (a target epsilon is calibrated over ``spec.total_rounds`` rounds)."""
    if not dp.enabled:
        raise ValueError("audit_client_dp needs client DP enabled (federated.client_dp.enabled)")
    callback = CanaryCallback(num_canaries, seed=seed, target="net")
    result = train_locally(net, train, val, num_classes, spec, seed, dp=dp,
                           callbacks=[callback])
    delta = resolve_delta(dp.delta, len(train))
    return callback.audit(delta, float(result.epsilon), guesses, confidence)
