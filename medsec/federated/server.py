"""The Flower ``ServerApp``: run the configured strategy for ``federated.rounds`` rounds.

The app is built around a *plan provider* (``Context`` -> :class:`ServerPlan`): the initial
global weights, the server-side evaluation of the global model (held-out test set: accuracy
per round, backdoor success rate) and a sink for the :class:`FederationOutcome`. The server
never sees client data; with ``secure_aggregation=ckks`` it never sees an individual update.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from medsec.federated.arrays import from_record, to_record
from medsec.federated.config import FederatedConfig
from medsec.federated.strategies import RoundCost, build_strategy

# round (0 = before training) and global weights -> metrics of the global model
GlobalEvaluator = Callable[[int, dict[str, np.ndarray]], dict[str, float]]


@dataclass
class FederationOutcome:
    """Final global weights, per-round costs, per-round global metrics (round -> metrics)."""

    arrays: dict[str, np.ndarray]
    rounds: list[RoundCost]
    global_metrics: dict[int, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class ServerPlan:
    fed: FederatedConfig
    initial: dict[str, np.ndarray]
    evaluate: GlobalEvaluator | None
    seed: int = 0
    he_public: bytes | None = None
    round_timeout: float = 3600.0
    max_client_examples: int = 1000  # SecAgg+ quantisation bound of a client's weight
    on_finish: Callable[[FederationOutcome], None] = lambda outcome: None


def run_server(grid: Grid, plan: ServerPlan) -> FederationOutcome:
    """Drive the federation with Flower's ``Strategy.start`` over ``grid``."""
    random.seed(plan.seed)  # Flower samples nodes with the `random` module
    strategy = build_strategy(plan.fed, plan.he_public)

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if plan.evaluate is None:
            return None
        return MetricRecord(plan.evaluate(server_round, from_record(arrays)))

    start = time.perf_counter()
    result = strategy.start(grid, to_record(plan.initial), num_rounds=plan.fed.rounds,
                            timeout=plan.round_timeout, evaluate_fn=evaluate_fn)
    outcome = FederationOutcome(
        arrays=from_record(result.arrays), rounds=strategy.rounds,
        global_metrics={int(r): {k: float(v) for k, v in m.items()}
                        for r, m in result.evaluate_metrics_serverapp.items()},
        seconds=time.perf_counter() - start,
    )
    plan.on_finish(outcome)
    return outcome


def build_server_app(provider: Callable[[Context], ServerPlan],
                     run: Callable[[Grid, ServerPlan], FederationOutcome] = run_server
                     ) -> ServerApp:
    """A ``ServerApp`` whose main runs ``run`` (:func:`run_server`, or
    :func:`~medsec.federated.secagg.run_secagg_server`) on ``provider(context)``."""
    app = ServerApp()

    @app.main()
    def _main(grid: Grid, context: Context) -> None:
        run(grid, provider(context))

    return app
