"""Secure aggregation: CKKS aggregate == plaintext FedAvg aggregate; the server holds no secret
key; CKKS and SecAgg+ federations give the plaintext federation's model."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from medsec.federated import he
from medsec.federated.arrays import flatten, model_arrays, to_record, unflatten
from medsec.federated.grid import InProcessGrid
from medsec.federated.simulation import build_apps, run_federation, setup_federation
from medsec.federated.strategies import (
    DECRYPT_MESSAGE,
    HE_KEY,
    HomomorphicFedAvg,
    build_strategy,
    decryption_request,
)
from medsec.models.factory import build_classifier
from tests.unit.federated_fixtures import tiny_dataset, tiny_settings

logging.getLogger("flwr").setLevel(logging.WARNING)


@pytest.fixture(scope="module")
def keys() -> he.HEKeys:
    return he.generate_keys()


def _client_arrays(seed: int) -> dict[str, np.ndarray]:
    net = build_classifier("small_cnn", 1, 2, (16, 16))
    rng = np.random.default_rng(seed)
    return {k: (v + rng.normal(0, 0.1, v.shape)).astype(np.float32)
            for k, v in model_arrays(net).items()}


def test_he_aggregate_equals_plaintext_aggregate(keys):
    clients = [_client_arrays(s) for s in range(3)]
    weights = [10, 25, 40]
    plain = aggregate_arrayrecords(
        [RecordDict({"arrays": to_record(a), "metrics": MetricRecord({"num-examples": w})})
         for a, w in zip(clients, weights, strict=True)], "num-examples")
    uploads = [he.encrypt_vector(keys.secret, w * flatten(a), keys.slots)
               for a, w in zip(clients, weights, strict=True)]
    summed = he.sum_ciphertexts(keys.public, uploads)  # no key needed to add
    size = len(flatten(clients[0]))
    aggregate = unflatten(he.decrypt_vector(keys.secret, summed, size) / sum(weights), clients[0])
    diff = max(float(np.abs(aggregate[k] - plain[k].numpy()).max()) for k in aggregate)
    assert diff <= 1e-4


def test_server_side_cannot_decrypt(keys):
    assert he.is_private(keys.secret) and not he.is_private(keys.public)
    chunks = he.encrypt_vector(keys.public, np.arange(5.0), keys.slots)
    with pytest.raises(he.HEError, match="secret"):
        he.decrypt_vector(keys.public, chunks, 5)
    with pytest.raises(he.HEError, match="public context only"):
        HomomorphicFedAvg(keys.secret)
    with pytest.raises(he.HEError, match="different numbers of ciphertext chunks"):
        he.sum_ciphertexts(keys.public, [chunks, chunks + chunks])


def _final_arrays(mode: str) -> tuple[dict[str, np.ndarray], list[dict[str, float]]]:
    cfg = tiny_settings(num_clients=3, rounds=1, secure_aggregation=mode)
    result = run_federation(*cfg, tiny_dataset(n_train=96, n_eval=32))
    return model_arrays(result.model), result.history


def test_secure_federations_give_the_plaintext_model():
    plain, plain_hist = _final_arrays("none")
    ckks, ckks_hist = _final_arrays("ckks")
    secagg, secagg_hist = _final_arrays("secaggplus")
    ckks_diff = max(float(np.abs(ckks[k] - plain[k]).max()) for k in plain)
    secagg_diff = max(float(np.abs(secagg[k] - plain[k]).max()) for k in plain)
    assert ckks_diff <= 1e-4
    assert secagg_diff <= 1e-3  # SecAgg+ quantises to 2**22 levels over [-8, 8]
    # the cost is visible: ciphertexts are much larger than the plain update
    assert ckks_hist[0]["upload_bytes_per_client"] > 5 * plain_hist[0]["upload_bytes_per_client"]
    assert ckks_hist[0]["he_aggregate_bytes"] > 0
    assert secagg_hist[0]["upload_bytes_per_client"] > plain_hist[0]["upload_bytes_per_client"]


def _ask(grid: InProcessGrid, node: int, request: RecordDict) -> Message:
    message = Message(request, dst_node_id=node, message_type=DECRYPT_MESSAGE)
    return next(iter(grid.send_and_receive([message])))


def test_curious_server_cannot_have_one_update_decrypted():
    fed, recipe = tiny_settings(num_clients=3, rounds=1, secure_aggregation="ckks")
    setup = setup_federation(fed, recipe, tiny_dataset(n_train=96, n_eval=32))
    grid = InProcessGrid(build_apps(setup)[1],
                         [{"partition-id": i, "num-partitions": 3} for i in range(3)])
    strategy = build_strategy(fed, setup.plan.he_public)
    train = list(strategy.configure_train(1, to_record(setup.plan.initial), ConfigRecord(),
                                          grid))
    replies = list(grid.send_and_receive(train))
    size = len(flatten(setup.plan.initial))
    nodes = list(grid.get_node_ids())
    # one hospital's ciphertext, sent as if it were the sum: refused by every hospital
    alone = RecordDict({HE_KEY: ConfigRecord({
        "ciphertext": list(replies[0].content[HE_KEY]["ciphertext"]), "size": size})})
    for node in nodes:
        assert _ask(grid, node, alone).has_error()
    # a well-formed request over one hospital's update, or over all three with the first
    # one's ciphertext in place of the third's, or to a node not named decryptor: refused
    decryptor = min(nodes)
    one = RecordDict({HE_KEY: decryption_request(1, replies[:1], size)})
    swapped = decryption_request(1, replies, size)
    chunks = list(swapped["ciphertext"])
    swapped["ciphertext"] = chunks[:2 * len(chunks) // 3] + chunks[:len(chunks) // 3]
    for node, request, why in [(decryptor, one, "at least 3"),
                               (decryptor, RecordDict({HE_KEY: swapped}), "not its tagged"),
                               (max(nodes), RecordDict({HE_KEY: decryption_request(
                                   1, replies, size)}), "not its tagged")]:
        reply = _ask(grid, node, request)
        assert reply.has_error() and why in reply.error.reason
    # the whole round's aggregate decrypts (to sum_k n_k w_k), once
    honest = RecordDict({HE_KEY: decryption_request(1, replies, size)})
    total = _ask(grid, decryptor, honest).content["arrays"]["aggregate"].numpy()
    secret = setup.sites[0].he_secret  # the test holds the key: decrypt each update alone
    expected = sum(he.decrypt_vector(secret, list(r.content[HE_KEY]["ciphertext"]), size)
                   for r in replies)
    assert np.abs(total - expected).max() <= 1e-4 * np.abs(expected).max()
    again = _ask(grid, decryptor, honest)
    assert again.has_error() and "already did 'decrypt'" in again.error.reason
