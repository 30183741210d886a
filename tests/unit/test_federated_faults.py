"""Bad input: a hospital that crashes mid-round, models of different shapes, too many clients."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from medsec.federated.arrays import ModelMismatchError, to_record
from medsec.federated.client import build_client_app
from medsec.federated.grid import InProcessGrid
from medsec.federated.partition import PartitionError
from medsec.federated.server import run_server
from medsec.federated.simulation import run_federation, setup_federation
from medsec.federated.strategies import ARRAYS_KEY, FederationError
from medsec.models.factory import build_classifier
from tests.unit.federated_fixtures import tiny_dataset, tiny_settings

logging.getLogger("flwr").setLevel(logging.CRITICAL)
DATA = tiny_dataset(n_train=96, n_eval=32)


def test_crash_mid_round_completes_with_the_configured_minimum():
    cfg = tiny_settings(num_clients=3, rounds=2, min_fit_clients=2,
                   faults={"crash_clients": [1], "crash_round": 1})
    result = run_federation(*cfg, DATA)
    first, second = result.history
    assert (first["clients_ok"], first["clients_failed"]) == (2, 1)
    assert (second["clients_ok"], second["clients_failed"]) == (3, 0)


def test_crash_mid_round_fails_clearly_below_the_minimum():
    cfg = tiny_settings(num_clients=3, rounds=2, faults={"crash_clients": [1], "crash_round": 2})
    with pytest.raises(FederationError) as info:
        run_federation(*cfg, DATA)
    message = str(info.value)
    assert "round 2: only 2 of 3 sampled clients" in message
    assert "min_fit_clients requires 3" in message and "crashed in round 2" in message


def _grid_with(setup, client_app):
    return InProcessGrid(client_app, [{"partition-id": i} for i in range(len(setup.sites))])


def test_hospital_with_another_model_fails_the_round_clearly():
    setup = setup_federation(*tiny_settings(num_clients=2, rounds=1), DATA)
    setup.sites[1].build_net = lambda: build_classifier("small_cnn", 1, 3, (16, 16))  # 3 classes
    app = build_client_app(lambda ctx: setup.sites[int(ctx.node_config["partition-id"])])
    with pytest.raises(FederationError, match=r"ModelMismatchError: hospital 1: .* has shape"):
        run_server(_grid_with(setup, app), setup.plan)


def test_update_of_another_shape_is_rejected_by_the_server():
    setup = setup_federation(*tiny_settings(num_clients=2, rounds=1), DATA)
    app = build_client_app(lambda ctx: setup.sites[int(ctx.node_config["partition-id"])])

    def tampered(message, context):
        reply = app(message, context)
        if message.metadata.message_type == "train" and context.node_config["partition-id"]:
            arrays = {k: v.numpy() for k, v in reply.content[ARRAYS_KEY].items()}
            key = next(iter(arrays))
            arrays[key] = arrays[key][:1]
            reply.content[ARRAYS_KEY] = to_record(arrays)
        return reply

    with pytest.raises(ModelMismatchError, match=r"update of node \d+: '.*' has shape"):
        run_server(_grid_with(setup, tampered), setup.plan)


def test_more_clients_than_samples_is_a_clear_error():
    with pytest.raises(PartitionError, match="federated.num_clients=5 is more than the 4"):
        run_federation(*tiny_settings(num_clients=5), tiny_dataset(n_train=4, n_eval=8))


def test_non_finite_aggregate_fails_the_round_clearly():
    setup = setup_federation(*tiny_settings(num_clients=2, rounds=1), DATA)
    app = build_client_app(lambda ctx: setup.sites[int(ctx.node_config["partition-id"])])

    def diverged(message, context):
        reply = app(message, context)
        if message.metadata.message_type == "train":
            arrays = {k: v.numpy() * np.float32("nan") for k, v in
                      reply.content[ARRAYS_KEY].items()}
            reply.content[ARRAYS_KEY] = to_record(arrays)
        return reply

    with pytest.raises(FederationError, match="round 1: the aggregated model has non-finite"):
        run_server(_grid_with(setup, diverged), setup.plan)
