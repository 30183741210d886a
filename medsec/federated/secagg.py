"""Secure Aggregation with Flower's SecAgg+ (``secure_aggregation=secaggplus``).

Flower 1.42 ships SecAgg+ only as a *legacy* workflow (``SecAggPlusWorkflow`` inside
``DefaultWorkflow``, legacy ``FedAvg``, ``NumPyClient`` + ``secaggplus_mod``), so this module
adapts the same hospital site (:class:`~medsec.federated.client.ClientSite`) and the same local
update (:func:`~medsec.federated.local.train_locally`) to that API. Clients quantise
``[n_k, n_k * w_k]`` (clipped to +-``clipping_range``), add pairwise masks that cancel in the
sum, and secret-share their mask keys so dropped clients can be unmasked; the server only
learns the sum. Weights are quantised: the aggregate differs from plain FedAvg by about
``clipping_range / quantization_range * max_weight`` per value.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from flwr.app import Context, RecordDict
from flwr.client import NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import ndarrays_to_parameters
from flwr.server import LegacyContext, ServerConfig
from flwr.server.strategy import FedAvg as LegacyFedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.serverapp import Grid

from medsec.federated.arrays import load_arrays, model_arrays
from medsec.federated.client import ClientSite
from medsec.federated.local import train_locally
from medsec.federated.server import FederationOutcome, ServerPlan
from medsec.federated.strategies import FederationError, RoundCost, sampled_clients

CLIPPING_RANGE = 8.0
QUANTIZATION_RANGE = 2**22


class SiteNumPyClient(NumPyClient):
    """A hospital as a legacy ``NumPyClient`` (parameters in ``model_arrays`` key order)."""

    def __init__(self, site: ClientSite) -> None:
        self.site = site
        self.keys = list(model_arrays(site.build_net()))

    def _net(self, parameters: list[np.ndarray]):
        net = self.site.build_net()
        if len(parameters) != len(self.keys):
            raise FederationError(f"hospital {self.site.partition_id}: got {len(parameters)} "
                                  f"arrays, its model has {len(self.keys)}")
        load_arrays(net, dict(zip(self.keys, parameters, strict=True)),
                    who=f"hospital {self.site.partition_id}")
        return net

    def fit(self, parameters, config):
        site = self.site
        server_round = int(config.get("server-round", 0))
        result = train_locally(self._net(parameters), site.train, site.val, site.num_classes,
                               site.training,
                               seed=site.seed + 1000 * server_round + site.partition_id)
        metrics = {"train_loss": result.train_loss, "train_seconds": result.seconds,
                   "partition-id": site.partition_id}
        return [result.arrays[k] for k in self.keys], result.num_examples, metrics


def build_secagg_client_app(provider: Callable[[Context], ClientSite]) -> ClientApp:
    """A legacy ``ClientApp`` with the SecAgg+ mod around :class:`SiteNumPyClient`."""
    return ClientApp(client_fn=lambda ctx: SiteNumPyClient(provider(ctx)).to_client(),
                     mods=[secaggplus_mod])


def run_secagg_server(grid: Grid, plan: ServerPlan) -> FederationOutcome:
    """Run ``plan.fed.rounds`` rounds of FedAvg through the SecAgg+ workflow."""
    fed = plan.fed
    keys = list(plan.initial)
    marks: list[tuple[float, dict[int, list[int]]]] = []
    metrics: dict[int, dict[str, float]] = {}

    def evaluate_fn(server_round: int, ndarrays, config):
        traffic = getattr(grid, "traffic", {})  # InProcessGrid meters payload bytes
        marks.append((time.perf_counter(), {k: list(v) for k, v in traffic.items()}))
        if plan.evaluate is None:
            return None
        result = plan.evaluate(server_round, dict(zip(keys, ndarrays, strict=True)))
        metrics[server_round] = result
        return result.get("test_loss", 0.0), result

    sampled = sampled_clients(fed)
    strategy = LegacyFedAvg(
        fraction_fit=fed.fraction_fit, fraction_evaluate=0.0, min_fit_clients=sampled,
        min_available_clients=fed.num_clients, evaluate_fn=evaluate_fn,
        initial_parameters=ndarrays_to_parameters([plan.initial[k] for k in keys]),
        on_fit_config_fn=lambda rnd: {"server-round": rnd},
    )
    context = LegacyContext(context=Context(run_id=1, node_id=0, node_config={},
                                            state=RecordDict(), run_config={}),
                            config=ServerConfig(num_rounds=fed.rounds), strategy=strategy)
    # Every sampled client shares its keys with all others; unmasking needs the shares of
    # ``min_fit_clients`` of them (the same minimum as the plain path; at least 2).
    minimum = min(fed.min_fit_clients or sampled, sampled)
    workflow = DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(
        num_shares=1.0, reconstruction_threshold=minimum / sampled,
        max_weight=float(plan.max_client_examples), clipping_range=CLIPPING_RANGE,
        quantization_range=QUANTIZATION_RANGE, timeout=plan.round_timeout))
    start = time.perf_counter()
    workflow(grid, context)
    final = context.state.array_records["parameters"].to_numpy_ndarrays()
    rounds = [_round_cost(r, sampled, marks[r - 1], marks[r]) for r in range(1, len(marks))]
    outcome = FederationOutcome(arrays=dict(zip(keys, final, strict=True)), rounds=rounds,
                                global_metrics=metrics, seconds=time.perf_counter() - start)
    plan.on_finish(outcome)
    return outcome


def _round_cost(server_round: int, sampled: int, before: tuple[float, dict],
                after: tuple[float, dict]) -> RoundCost:
    """Seconds and mean payload bytes per client (all four SecAgg+ stages) of one round."""
    cost = RoundCost(round=server_round, sampled=sampled, succeeded=sampled,
                     seconds=after[0] - before[0])
    nodes = list(after[1])
    if nodes:
        down = [after[1][n][0] - before[1].get(n, [0, 0])[0] for n in nodes]
        up = [after[1][n][1] - before[1].get(n, [0, 0])[1] for n in nodes]
        cost.download_bytes_per_client = float(np.mean(down))
        cost.upload_bytes_per_client = float(np.mean(up))
    return cost

