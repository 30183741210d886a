"""Partitioning invariants: disjoint, covering, seeded; skew grows as Dirichlet alpha shrinks."""

from __future__ import annotations

import numpy as np
import pytest

from medsec.config import load_config
from medsec.errors import ConfigError
from medsec.federated.partition import (
    PartitionError,
    label_histogram,
    label_skew_score,
    partition_indices,
)

LABELS = np.random.default_rng(0).integers(0, 4, size=1000)


@pytest.mark.parametrize(("scheme", "kwargs"), [
    ("iid", {}), ("label_skew", {"classes_per_client": 2}), ("dirichlet", {"alpha": 0.1}),
])
def test_partitions_are_disjoint_cover_and_seeded(scheme, kwargs):
    parts = partition_indices(LABELS, 7, scheme, seed=3, **kwargs)
    assert len(parts) == 7 and all(len(p) > 0 for p in parts)
    joined = np.concatenate(parts)
    assert len(joined) == len(LABELS) and set(joined.tolist()) == set(range(len(LABELS)))
    again = partition_indices(LABELS, 7, scheme, seed=3, **kwargs)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    other = partition_indices(LABELS, 7, scheme, seed=4, **kwargs)
    assert any(not np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


def test_dirichlet_skew_grows_as_alpha_shrinks():
    skews = [np.mean([label_skew_score(LABELS, partition_indices(
        LABELS, 10, "dirichlet", seed=s, alpha=alpha), 4) for s in range(3)])
        for alpha in (100.0, 1.0, 0.1)]
    iid = label_skew_score(LABELS, partition_indices(LABELS, 10, "iid", seed=0), 4)
    assert iid < 0.1 and skews[0] < 0.1
    assert skews[0] < skews[1] < skews[2] and skews[2] > 0.5


def test_label_skew_gives_each_client_its_classes_only():
    parts = partition_indices(LABELS, 8, "label_skew", seed=0, classes_per_client=1)
    hist = label_histogram(LABELS, parts, 4)
    assert ((hist > 0).sum(axis=1) == 1).all()
    assert (hist.sum(axis=0) == np.bincount(LABELS, minlength=4)).all()


def test_more_clients_than_samples_is_a_clear_error():
    with pytest.raises(PartitionError, match=r"federated.num_clients=6 is more than the 5"):
        partition_indices(np.array([0, 1, 0, 1, 0]), 6, "iid")
    with pytest.raises(PartitionError, match="classes_per_client"):
        partition_indices(LABELS, 2, "label_skew", classes_per_client=1)


@pytest.mark.parametrize(("override", "field"), [
    ("federated.num_clients=0", "federated.num_clients"),
    ("federated.partition=random", "federated.partition"),
    ("federated.dirichlet_alpha=0", "federated.dirichlet_alpha"),
    ("federated.attack.malicious_clients=[9]", "attack.malicious_clients"),
    ("federated.faults.crash_clients=[3]", "faults.crash_clients"),
    ("federated.strategy=krum", "assumed_malicious"),
    ("federated.strategy=trimmed_mean", "trim_beta"),
    ("federated.min_fit_clients=4", "min_fit_clients"),
    ("federated.rounds_total=3", "federated.rounds_total"),
])
def test_bad_federated_config_names_the_field(override, field):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    assert field in str(info.value)


def test_incompatible_options_are_rejected():
    with pytest.raises(ConfigError, match="secure_aggregation"):
        load_config(overrides=["federated.num_clients=5", "federated.strategy=median",
                               "federated.secure_aggregation=ckks"])
    with pytest.raises(ConfigError, match="ckks needs at least 2 clients per round"):
        load_config(overrides=["federated.num_clients=1", "federated.secure_aggregation=ckks"])
    with pytest.raises(ConfigError, match="client_dp"):
        load_config(overrides=["federated.strategy=fedprox", "federated.client_dp.enabled=true",
                               "federated.client_dp.noise_multiplier=1.0"])
