"""Recipe audit of the federated recipes: the federation trained on a pool half is FedAvg of
the clients' local fits (oracle: the weighted mean computed here by hand), a memorising
federation leaks membership of the union of the clients' data under the declared attack, and
client DP keeps the audited AUC within what its claimed epsilon allows."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from medsec.config import load_config
from medsec.data.types import ImageDataset, LoadedDataset
from medsec.errors import ConfigError, DataError
from medsec.federated.arrays import load_arrays, model_arrays
from medsec.federated.local import train_locally
from medsec.federated.recipe import FederatedTrainer
from medsec.federated.simulation import setup_federation
from medsec.stages import federated as fed_stage
from medsec.stages import privacy as privacy_stage
from tests.unit.federated_fixtures import tiny_dataset, tiny_settings

pytestmark = pytest.mark.usefixtures("one_thread")


def _noise_data(n: int = 48, seed: int = 0) -> LoadedDataset:
    """Random images with random labels: only memorisation separates members."""
    rng = np.random.default_rng(seed)

    def split(k: int) -> ImageDataset:
        return ImageDataset(rng.random((k, 1, 16, 16)).astype(np.float32),
                            rng.integers(0, 2, k).astype(np.int64))

    return LoadedDataset(name="phantoms", splits={"train": split(n), "val": split(n),
                                                  "test": split(32)},
                         num_classes=2, class_names=["a", "b"], source_path="<memory>",
                         version="noise", verification="synthetic", synthetic=True)


AUDIT = ["train.num_threads=1", "train.lr=0.003", "train.augment=false", "model.norm=group",
         "federated.num_clients=2", "federated.rounds=2", "federated.local_epochs=10",
         "federated.recipe_audit.enabled=true", "privacy.audit.num_reference=4",
         "privacy.audit.attacks=[loss,lira]", "privacy.audit.declared_attack=lira_online"]


def test_federated_recipe_is_fedavg_of_the_clients_local_fits():
    """One round, two clients of unequal size: the trainer's global model equals the
    example-weighted mean of each client's local fit from the shared initial weights (same
    seeds as the grid), not the plain mean."""
    fed, recipe = tiny_settings(num_clients=2, rounds=1, partition="dirichlet",
                                dirichlet_alpha=0.3)
    data = tiny_dataset(96, 32)
    global_model = FederatedTrainer(fed)(recipe, data).model
    setup = setup_federation(fed, recipe, data)
    updates, weights = [], []
    for site in setup.sites:
        net = site.build_net()
        load_arrays(net, setup.plan.initial)
        res = train_locally(net, site.train, site.val, site.num_classes, site.training,
                            seed=site.seed + 1000 * 1 + site.partition_id)
        updates.append(res.arrays)
        weights.append(res.num_examples)
    assert sum(weights) == 96 and abs(weights[0] - weights[1]) >= 10  # weighting matters
    got = model_arrays(global_model)
    w = np.asarray(weights, float) / sum(weights)
    for name, value in got.items():
        expected = sum(wk * u[name] for wk, u in zip(w, updates, strict=True))
        if np.issubdtype(value.dtype, np.floating):
            np.testing.assert_allclose(value, expected, rtol=1e-5, atol=1e-6, err_msg=name)
    last = "backbone.final.1.weight"
    assert not np.allclose(got[last], 0.5 * (updates[0][last] + updates[1][last]),
                           rtol=1e-5, atol=1e-6)


def test_memorising_federation_leaks_and_client_dp_bounds_the_audit():
    data = _noise_data()
    cfg = load_config(preset="tiny", overrides=[
        *AUDIT, "federated.recipe_audit.client_dp_epsilons=[1]"])
    points = fed_stage.recipe_audit_points(cfg)
    assert [label for label, _ in points] == ["fedavg", "fedavg-client-dp-eps1"]
    pool = privacy_stage.audit_pool(cfg, data)
    assert len(pool) == 96
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = fed_stage.recipe_audit(points[0][1], data, pool)
        private = fed_stage.recipe_audit(points[1][1], data, pool)
    for result in (plain, private):
        m = result.metrics
        assert result.declared == "lira_online"
        assert (m["mia_n_members"], m["mia_n_nonmembers"], m["mia_n_reference_models"]) == (
            48.0, 48.0, 4.0)
        assert m["mia_auc_ci_low"] <= m["mia_auc"] <= m["mia_auc_ci_high"]
        assert m["mia_auc"] == m["mia_lira_online_auc"]  # the declared one, not the best
        assert m["mia_tpr_at_0.1pct_fpr"] is None  # 48 non-members cannot resolve 0.1 % FPR
        assert sum(len(v) for v in result.target.meta["audit_members"].values()) == 48
    # random labels: the federation can only fit its members by memorising them
    assert plain.metrics["mia_auc_ci_low"] > 0.7
    assert "epsilon" not in plain.metrics
    eps, delta = private.metrics["epsilon"], private.metrics["delta"]
    assert 0.5 < eps <= 1.0 + 1e-6 and delta == pytest.approx(1 / (10 * 24))
    # (eps, delta)-DP bounds every attack's ROC by TPR <= e^eps FPR + delta (and the mirror),
    # so the AUC is at most about e^eps / (1 + e^eps) + delta = 0.73 at eps = 1
    assert private.metrics["mia_auc_ci_low"] < math.exp(eps) / (1 + math.exp(eps)) + delta
    assert private.metrics["mia_auc"] < plain.metrics["mia_auc_ci_low"]


def test_recipe_audit_settings_and_site_keys():
    assert fed_stage.recipe_audit_points(load_config(preset="tiny")) == []
    with pytest.raises(ConfigError, match="client_dp_epsilons"):
        load_config(preset="tiny", overrides=["federated.recipe_audit.client_dp_epsilons=[0]"])
    cfg = load_config(preset="tiny", overrides=[*AUDIT, "federated.client_dp.enabled=true",
                                                "federated.client_dp.noise_multiplier=1.0"])
    assert [label for label, _ in fed_stage.recipe_audit_points(cfg)] == ["fedavg-client-dp"]
    # site keys travel into the pool, so a half federates one client per site
    data = _noise_data(24)
    sites = np.asarray(["T0", "T1"] * 12)
    splits = {k: ImageDataset(s.images, s.labels, site_ids=sites if k != "test" else None)
              for k, s in data.splits.items() if k != "test"} | {"test": data.splits["test"]}
    site_data = LoadedDataset(**{**data.__dict__, "splits": splits})
    pool = privacy_stage.audit_pool(cfg, site_data)
    assert pool.sites is not None and set(pool.sites) == {"T0", "T1"}
    half = pool.subset(np.arange(len(pool)) % 2 == 0)
    assert half.site_ids is not None and len(half.site_ids) == len(half)
    fed, recipe = tiny_settings(num_clients=2, partition="site")
    with pytest.raises(DataError, match="site keys"):
        FederatedTrainer(fed)(recipe, tiny_dataset(32, 16))
