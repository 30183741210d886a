"""Poisoning and robust aggregation, client DP and central DP on a tiny task."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from medsec.errors import ConfigError
from medsec.federated import poisoning
from medsec.federated.simulation import run_federation, setup_federation
from medsec.privacy.accounting import epsilon_for
from tests.unit.federated_fixtures import tiny_dataset, tiny_settings

logging.getLogger("flwr").setLevel(logging.WARNING)
DATA = tiny_dataset()
# 1 of 5 hospitals trains on flipped labels and scales its update x5 ("boosting"); a plain
# flip of one hospital in five barely moves FedAvg on a task this easy (see README numbers).
FLIP = {"kind": "label_flip", "malicious_clients": [0], "boost": 5.0}


def _acc(**federated) -> float:
    cfg = tiny_settings(num_clients=5, rounds=1, local_epochs=2, **federated)
    return run_federation(*cfg, DATA).summary["test_acc"]


def test_robust_aggregators_resist_a_label_flipping_client():
    clean = _acc()
    attacked = _acc(attack=FLIP)
    assert clean >= 0.9
    assert attacked <= clean - 0.3  # FedAvg is hurt measurably
    for strategy in ("median", "trimmed_mean", "krum"):
        robust = _acc(attack=FLIP, strategy=strategy)
        assert robust >= clean - 0.1, strategy  # ... and the robust rule recovers most of it


def test_backdoor_poisoning_and_model_replacement_mechanics():
    train = DATA.splits["train"]
    poisoned = poisoning.poison_with_trigger(train, 0.25, target=1, size=3, seed=0)
    stamped = (poisoned.images[:, 0, -3:, -3:] == 1.0).all(axis=(1, 2))
    assert stamped.sum() == 40 and (poisoned.labels[stamped] == 1).all()
    assert (poisoned.labels[~stamped] == train.labels[~stamped]).all()
    g, local = {"w": np.zeros(3, np.float32)}, {"w": np.ones(3, np.float32)}
    assert poisoning.scale_update(g, local, 5.0)["w"].tolist() == [5.0, 5.0, 5.0]

    class Always(torch.nn.Module):  # predicts class `c` for every image
        def __init__(self, c: int) -> None:
            super().__init__()
            self.c = c

        def forward(self, x):
            return torch.nn.functional.one_hot(torch.full((len(x),), self.c), 2).float()

    test = DATA.splits["test"]
    assert poisoning.backdoor_success_rate(Always(1), test, 1, 3) == 1.0
    assert poisoning.backdoor_success_rate(Always(1), test, 1, 3, triggered=False) == 1.0
    assert poisoning.backdoor_success_rate(Always(0), test, 1, 3) == 0.0


def test_backdoor_federation_reports_success_and_baseline_rates():
    backdoor = {"kind": "backdoor", "malicious_clients": [0], "from_round": 2}
    settings = tiny_settings(num_clients=3, rounds=2, attack=backdoor)
    last = run_federation(*settings, DATA).history[-1]
    for key in ("backdoor_success_rate", "backdoor_baseline_rate", "test_acc"):
        assert 0.0 <= last[key] <= 1.0, key


def test_client_dp_reports_a_growing_per_client_epsilon():
    dp = {"enabled": True, "noise_multiplier": 1.0, "max_grad_norm": 1.0}
    cfg = tiny_settings("group", num_clients=2, rounds=2, client_dp=dp)
    result = run_federation(*cfg, DATA)
    eps = [row["epsilon_client_max"] for row in result.history]
    assert 0 < eps[0] < eps[1]
    # 80 examples per hospital, batch 32 -> 3 steps per epoch, delta = 1/(10 * 80)
    assert eps[1] == pytest.approx(epsilon_for(1.0, 1 / 3, 6, 1 / 800, "rdp"), rel=1e-6)
    # the raw training loss is a function of the private data outside DP-SGD: never sent
    assert len(result.clients) == 2 and not any("train_loss" in c for c in result.clients)
    assert not any("train_loss" in row for row in result.history)


def test_client_dp_delta_must_be_below_one_over_each_hospitals_data():
    # 160 training images over 2 hospitals: N_k = 80, so delta must be < 1/80 = 0.0125
    dp = {"enabled": True, "noise_multiplier": 1.0, "delta": 0.02}
    with pytest.raises(ConfigError, match=r"federated.client_dp.delta.*hospital 0.*N=80"):
        setup_federation(*tiny_settings("group", num_clients=2, client_dp=dp), DATA)
    dp["delta"] = 0.01
    assert setup_federation(*tiny_settings("group", num_clients=2, client_dp=dp), DATA).sites


@pytest.mark.parametrize("mode", ["fixed", "adaptive"])
def test_central_dp_runs_and_accounts_user_level_epsilon(mode):
    central = {"mode": mode, "noise_multiplier": 1.0, "clipping_norm": 1.0}
    cfg = tiny_settings("group", num_clients=3, rounds=2, central_dp=central)
    history = run_federation(*cfg, DATA).history
    assert [row["epsilon_central"] for row in history] == pytest.approx(
        [epsilon_for(1.0, 1.0, r, 1 / 30, "rdp") for r in (1, 2)])
    with pytest.raises(ConfigError, match="model.norm"):
        run_federation(*tiny_settings(num_clients=3, central_dp=central), DATA)
