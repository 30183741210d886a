"""Server strategies: Flower's FedAvg/FedProx/Krum/FedTrimmedAvg/FedMedian, Flower's central-DP
wrappers, the CKKS strategy, and :class:`GuardedStrategy` around all of them.

``GuardedStrategy`` is the one place that (a) enforces the configured minimum of successful
replies per round (fewer -> :class:`FederationError` naming the failed clients and why),
(b) rejects updates whose shapes differ from the global model (:class:`ModelMismatchError`)
and (c) books the cost of each round: seconds, payload bytes per client each way, and every
client's reported metrics.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import (
    DifferentialPrivacyServerSideAdaptiveClipping,
    DifferentialPrivacyServerSideFixedClipping,
    FedAvg,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    Krum,
    Strategy,
)
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

from medsec.errors import MedSecError
from medsec.federated import he
from medsec.federated.arrays import (
    check_same_shapes,
    from_record,
    payload_bytes,
    to_record,
    unflatten,
)
from medsec.federated.config import FederatedConfig

ARRAYS_KEY = "arrays"
METRICS_KEY = "metrics"
HE_KEY = "he"
EXAMPLES_KEY = "num-examples"
UNIT_WEIGHT_KEY = "unit-weight"  # uniform weighting: what central-DP noise is calibrated for
DECRYPT_MESSAGE = "query.decrypt"


class FederationError(MedSecError, RuntimeError):
    """A round could not complete (too few successful clients, no aggregate, ...)."""


@dataclass
class RoundCost:
    """Book-keeping of one training round (filled by :class:`GuardedStrategy`)."""

    round: int
    sampled: int = 0
    succeeded: int = 0
    failures: dict[int, str] = field(default_factory=dict)  # node id -> reason
    seconds: float = 0.0
    download_bytes_per_client: float = 0.0
    upload_bytes_per_client: float = 0.0
    extra_bytes: int = 0  # e.g. the tagged ciphertexts forwarded for decryption
    clients: list[dict[str, float]] = field(default_factory=list)
    fed_eval: dict[str, float] = field(default_factory=dict)


def sampled_clients(fed: FederatedConfig) -> int:
    """Clients asked to train each round: ``ceil(fraction_fit * num_clients)`` (>= 1)."""
    return max(1, math.ceil(fed.fraction_fit * fed.num_clients - 1e-9))


class GuardedStrategy(Strategy):
    """Wraps a Flower strategy: minimum replies, shape checks, per-round costs (``rounds``)."""

    def __init__(self, inner: Strategy, min_replies: int, check_shapes: bool = True) -> None:
        super().__init__()
        self.inner = inner
        self.min_replies = min_replies
        self.check_shapes = check_shapes
        self.rounds: list[RoundCost] = []
        self._global: dict[str, np.ndarray] = {}
        self._started = 0.0

    def summary(self) -> None:
        self.inner.summary()

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self._started = time.perf_counter()
        self._global = from_record(arrays)
        messages = list(self.inner.configure_train(server_round, arrays, config, grid))
        cost = RoundCost(round=server_round, sampled=len(messages))
        if messages:
            cost.download_bytes_per_client = float(payload_bytes(messages[0].content))
        self.rounds.append(cost)
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        cost = self.rounds[-1]
        replies = list(replies)
        valid = [m for m in replies if not m.has_error()]
        cost.failures = {m.metadata.src_node_id: m.error.reason
                         for m in replies if m.has_error()}
        missing = cost.sampled - len(replies)
        cost.succeeded = len(valid)
        need = min(self.min_replies, cost.sampled)
        if len(valid) < need:
            why = "; ".join(f"node {k}: {v}" for k, v in cost.failures.items())
            if missing:
                why += f"{'; ' if why else ''}{missing} client(s) did not answer in time"
            raise FederationError(f"round {server_round}: only {len(valid)} of {cost.sampled} "
                                  "sampled clients returned an update, federated.min_fit_clients "
                                  f"requires {need} ({why})")
        for msg in valid:
            self._book_reply(msg, cost)
        arrays, metrics = self.inner.aggregate_train(server_round, valid)
        if arrays is None:
            raise FederationError(f"round {server_round}: the strategy produced no aggregate")
        bad = [k for k, v in arrays.items() if not np.isfinite(v.numpy()).all()]
        if bad:
            raise FederationError(f"round {server_round}: the aggregated model has non-finite "
                                  f"weights ({bad[0]}{' and others' if len(bad) > 1 else ''}): an "
                                  "update diverged or was poisoned (a robust federated.strategy "
                                  "such as median or krum rejects such updates)")
        cost.extra_bytes += int(getattr(self.inner, "last_extra_bytes", 0))
        cost.seconds = time.perf_counter() - self._started
        return arrays, metrics

    def _book_reply(self, msg: Message, cost: RoundCost) -> None:
        content = msg.content
        node = msg.metadata.src_node_id
        if self.check_shapes and content.array_records:
            record = next(iter(content.array_records.values()))
            check_same_shapes(self._global, from_record(record), f"update of node {node}")
        n = len(cost.clients)
        cost.upload_bytes_per_client = (cost.upload_bytes_per_client * n
                                        + payload_bytes(content)) / (n + 1)
        metrics = next(iter(content.metric_records.values()), MetricRecord())
        cost.clients.append({"node_id": float(node),
                             **{k: float(v) for k, v in metrics.items()
                                if isinstance(v, int | float)}})

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]
                           ) -> MetricRecord | None:
        valid = [m for m in replies if not m.has_error()]
        metrics = self.inner.aggregate_evaluate(server_round, valid) if valid else None
        if metrics is not None and self.rounds:
            self.rounds[-1].fed_eval = {
                k: float(v) for k, v in metrics.items()
                if isinstance(v, int | float) and k not in (EXAMPLES_KEY, UNIT_WEIGHT_KEY)}
        return metrics


def decryption_request(server_round: int, replies: list[Message], size: int) -> ConfigRecord:
    """What the server forwards to the round's decrypting hospital: the senders' node ids, their
    tags and their ciphertext chunks (concatenated in that order), and the model ``size``."""
    records = [m.content[HE_KEY] for m in replies]
    return ConfigRecord({
        "round": server_round, "size": size, "nodes": [m.metadata.src_node_id for m in replies],
        "tags": [r["tag"] for r in records],
        "ciphertext": [chunk for r in records for chunk in r["ciphertext"]],
    })


def grid_decryptor(request: ConfigRecord, grid: Grid | None, node: int | None) -> np.ndarray:
    """Have hospital ``node`` (the round's decryptor) sum and decrypt ``request``."""
    if grid is None or node is None:
        raise FederationError("ckks: no hospital is reachable to decrypt the aggregate")
    message = Message(RecordDict({HE_KEY: request}), dst_node_id=node,
                      message_type=DECRYPT_MESSAGE)
    replies = list(grid.send_and_receive([message], timeout=600))
    if not replies or replies[0].has_error():
        why = replies[0].error.reason if replies else "no reply"
        raise FederationError(f"ckks: hospital {node} did not decrypt the aggregate ({why})")
    return replies[0].content[ARRAYS_KEY]["aggregate"].numpy()


class HomomorphicFedAvg(FedAvg):
    """FedAvg over CKKS ciphertexts: the server holds the public context only and forwards.

    Each round names one sampled hospital as decryptor (``he-decryptor`` in the train config).
    Each reply carries ``content["he"]`` (``ciphertext``: chunks of ``n_k * w_k``; ``tag``) and
    ``num-examples`` in its metrics. ``aggregate_train`` forwards the tagged ciphertexts to the
    decryptor, which checks, sums and decrypts them (:func:`he.verified_sum`); the server
    divides by ``sum n_k``.
    """

    def __init__(self, public_context: bytes, proximal_mu: float = 0.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.proximal_mu = proximal_mu
        if he.is_private(public_context):
            raise he.HEError("HomomorphicFedAvg got a context with a secret key: the server "
                             "must hold the public context only")
        self.last_extra_bytes = 0
        self._grid: Grid | None = None
        self._decryptor: int | None = None
        self._like: dict[str, np.ndarray] = {}

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        self._grid = grid
        self._like = from_record(arrays)
        if self.proximal_mu > 0:
            config["proximal-mu"] = self.proximal_mu
        messages = list(super().configure_train(server_round, arrays, config, grid))
        self._decryptor = min((m.metadata.dst_node_id for m in messages), default=None)
        for message in messages:
            message.content["config"]["he-decryptor"] = self._decryptor
        return messages

    def aggregate_train(self, server_round: int, replies: Iterable[Message]
                        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid = [m for m in replies if not m.has_error()]
        if not valid:
            return None, None
        contents = [m.content for m in valid]
        if any(HE_KEY not in c.config_records for c in contents):
            raise FederationError("ckks: a client replied without an encrypted update")
        size = sum(int(np.prod(v.shape)) for v in self._like.values())
        request = decryption_request(server_round, valid, size)
        vector = grid_decryptor(request, self._grid, self._decryptor)
        self.last_extra_bytes = sum(len(c) for c in request["ciphertext"]) + 8 * size
        total = float(sum(float(c[METRICS_KEY][EXAMPLES_KEY]) for c in contents))
        arrays = to_record(unflatten(vector / total, self._like))
        return arrays, aggregate_metricrecords(contents, self.weighted_by_key)


def build_strategy(fed: FederatedConfig, he_public: bytes | None = None) -> GuardedStrategy:
    """The configured Flower strategy (plus central DP / CKKS), wrapped in the guard."""
    n = fed.num_clients
    sampled = sampled_clients(fed)
    # with min_fit_clients, that many connected hospitals suffice (one may drop out mid-run)
    enough = min(n, fed.min_fit_clients or n)
    common = dict(fraction_train=fed.fraction_fit, fraction_evaluate=1.0,
                  min_train_nodes=min(sampled, enough), min_evaluate_nodes=enough,
                  min_available_nodes=enough,
                  weighted_by_key=UNIT_WEIGHT_KEY if fed.central_dp.mode != "off" else EXAMPLES_KEY,
                  arrayrecord_key=ARRAYS_KEY)
    inner: Strategy
    if fed.secure_aggregation == "ckks":
        if he_public is None:
            raise he.HEError("secure_aggregation=ckks needs the public CKKS context")
        mu = fed.proximal_mu if fed.strategy == "fedprox" else 0.0
        inner = HomomorphicFedAvg(he_public, proximal_mu=mu, **common)
    else:  # the config validates the name
        kind, extra = {
            "fedavg": (FedAvg, {}), "fedprox": (FedProx, {"proximal_mu": fed.proximal_mu}),
            "krum": (Krum, {"num_malicious_nodes": fed.assumed_malicious}),
            "trimmed_mean": (FedTrimmedAvg, {"beta": fed.trim_beta}), "median": (FedMedian, {}),
        }[fed.strategy]
        inner = kind(**extra, **common)
    dp = fed.central_dp
    if dp.mode == "fixed":
        inner = DifferentialPrivacyServerSideFixedClipping(
            inner, dp.noise_multiplier, dp.clipping_norm, sampled)
    elif dp.mode == "adaptive":
        count_std = dp.clipped_count_stddev or max(sampled / 20, dp.noise_multiplier)
        inner = DifferentialPrivacyServerSideAdaptiveClipping(
            inner, dp.noise_multiplier, sampled, initial_clipping_norm=dp.clipping_norm,
            target_clipped_quantile=dp.target_quantile, clip_norm_lr=dp.clip_lr,
            clipped_count_stddev=count_std)
    min_replies = fed.min_fit_clients if fed.min_fit_clients is not None else sampled
    return GuardedStrategy(inner, min_replies)
