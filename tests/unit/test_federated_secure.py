"""Secure aggregation: CKKS aggregate == plaintext FedAvg aggregate; the server holds no secret
key; CKKS and SecAgg+ federations give the plaintext federation's model."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from flwr.app import MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from medsec.federated import he
from medsec.federated.arrays import flatten, model_arrays, to_record, unflatten
from medsec.federated.simulation import run_federation
from medsec.federated.strategies import HomomorphicFedAvg
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
    summed = he.sum_ciphertexts(keys.public, uploads)  # the server: public context only
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
        he.sum_ciphertexts(keys.secret, [chunks])
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
