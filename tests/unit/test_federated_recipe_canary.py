"""The federated recipe audit's one-run canary audit (``federated.recipe_audit.canary``) and
its multi-label pools.

Oracles: a DP mechanism cannot be audited above its claim (Steinke et al. 2023: the bound is a
valid 95 % lower bound on the epsilon the run satisfies), so under client DP the audited bound
stays <= the round's claimed epsilon over two seeds, while the very same plain local training
with the same canaries proves far more than that claim (so a client DP that added no noise
would fail the first check); multi-label pools go through the recipe audit (the old code
refused them) with the canary bound beside the membership numbers.
"""

from __future__ import annotations

import math
import warnings

import pytest

from medsec.config import load_config
from medsec.errors import ConfigError
from medsec.stages import classifier
from medsec.stages import federated as fed_stage
from medsec.stages import privacy as privacy_stage
from tests.unit.federated_fixtures import tiny_dataset
from tests.unit.test_multilabel_federated import tiny_multilabel

pytestmark = pytest.mark.usefixtures("one_thread")

# 1024 images per hospital keep delta = 1/(10 N_k) small beside m = 200 canaries (the bound's
# delta term grows with 2 m delta); three local epochs put each included canary in ~3 steps
CANARY = ["model.name=small_cnn", "model.norm=group", "train.batch_size=32", "train.lr=0.01",
          "train.optimizer=sgd", "train.num_threads=1", "dataset.max_train=null",
          "federated.num_clients=2", "federated.rounds=2", "federated.canary.num_canaries=200",
          "federated.canary.epochs=3"]


@pytest.mark.parametrize("seed", [0, 1])
def test_recipe_canary_bound_never_exceeds_client_dp_and_is_positive_without(seed):
    data = tiny_dataset(2048, 32, seed=seed)
    seeds = [f"seed={seed}", f"federated.canary.seed={seed}"]
    plain_cfg = load_config(preset="tiny", overrides=[*CANARY, *seeds])
    dp_cfg = load_config(preset="tiny", overrides=[
        *CANARY, *seeds, "federated.client_dp.enabled=true",
        "federated.client_dp.target_epsilon=1.0"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = fed_stage.recipe_canary_audit(plain_cfg, classifier.recipe(plain_cfg), data)
        private = fed_stage.recipe_canary_audit(dp_cfg, classifier.recipe(dp_cfg), data)
    for audit in (plain, private):
        assert audit.num_canaries == 200 and audit.kind == "gradient"
        assert audit.delta == pytest.approx(1 / (10 * 1024))
        assert audit.inserted > 150  # ~100 included x 3 epochs x q = 1/32 x 32 steps
    # non-private hospital, strong canaries: a clearly positive bound, no claim
    assert math.isinf(plain.epsilon) and plain.epsilon_audit_lower > 1.5
    # client DP: the first of two rounds claims less than the 2-round target 1.0, and the
    # audit stays below the claim although the same canaries prove > 1.5 without the noise
    assert 0.3 < private.epsilon < 1.0
    assert 0.0 <= private.epsilon_audit_lower <= private.epsilon
    metrics = fed_stage.canary_metrics(private)
    assert metrics["canary_epsilon"] == private.epsilon
    assert metrics["epsilon_audit_lower"] == private.epsilon_audit_lower
    assert "epsilon" not in metrics and "canary_epsilon" not in fed_stage.canary_metrics(plain)


ML_AUDIT = ["train.num_threads=1", "train.lr=0.003", "train.augment=false", "model.norm=group",
            "federated.num_clients=2", "federated.rounds=1", "federated.local_epochs=2",
            "federated.recipe_audit.enabled=true", "federated.canary.num_canaries=20",
            "privacy.audit.num_reference=2", "privacy.audit.attacks=[loss,lira]",
            "privacy.audit.declared_attack=lira_online"]


def test_federated_recipe_audit_accepts_multilabel_pools():
    data = tiny_multilabel(48, 48)
    assert data.task == "multilabel"
    cfg = load_config(preset="tiny", overrides=[
        *ML_AUDIT, "federated.recipe_audit.client_dp_epsilons=[2]"])
    pool = privacy_stage.audit_pool(cfg, data)
    assert len(pool) == 96 and pool.labels.ndim == 2
    (_, plain_cfg), (_, dp_cfg) = fed_stage.recipe_audit_points(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = fed_stage.recipe_audit(plain_cfg, data, pool)
        private = fed_stage.recipe_audit(dp_cfg, data, pool)
    for result in (plain, private):
        m = result.metrics
        assert (m["mia_n_members"], m["mia_n_nonmembers"]) == (48.0, 48.0)
        assert 0.0 <= m["mia_auc"] <= 1.0 and m["mia_auc"] == m["mia_lira_online_auc"]
        assert m["audit_num_canaries"] == 20 and m["epsilon_audit_lower"] >= 0.0
        assert result.target.meta["canary_audit"]["kind"] == "gradient"
    assert "epsilon" not in plain.metrics
    m = private.metrics
    assert m["epsilon_audit_lower"] <= m["canary_epsilon"]
    assert m["canary_epsilon"] <= m["epsilon"] <= 2.0 + 1e-6
    # input canaries carry one random class each: refused on multi-label data in one line
    bad = load_config(preset="tiny", overrides=[*ML_AUDIT, "federated.canary.kind=input"])
    with pytest.raises(ConfigError, match=r"^federated\.canary\.kind: two_findings"):
        fed_stage.recipe_audit(bad, data, pool)
