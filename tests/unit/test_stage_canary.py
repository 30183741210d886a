"""The one-run DP audit (Steinke, Nasr and Jagielski 2023) wired into the deepfake and
federated stages: the stage functions read ``deepfake.canary`` / ``federated.canary``, return
None when it is off, and with DP on audit the very mechanism the stage claims an epsilon for,
so the lower bound never exceeds that epsilon (the invariant of a correct DP-SGD)."""

from __future__ import annotations

import math
import warnings

import pytest

from medsec.config import load_config
from tests.unit.attack_fixtures import single_thread  # noqa: F401  (one intra-op thread)

pytestmark = pytest.mark.usefixtures("single_thread")

TINY_GAN = ["deepfake.gan.latent_dim=8", "deepfake.gan.generator_channels=[16,8]",
            "deepfake.gan.discriminator_channels=[8,16]", "deepfake.dp.batch_size=32",
            "deepfake.dp.epochs=2", "deepfake.dp.accountant=rdp"]


def _reference():
    from medsec.deepfakes.evaluate import RealReference
    from tests.unit.deepfake_fixtures import blob_dataset

    data = blob_dataset(128)
    return RealReference(train=data, holdout=blob_dataset(32, seed=1),
                         test=blob_dataset(32, seed=2), class_names=["a", "b"],
                         feature_net=None)


def test_deepfake_canary_setting_defaults():
    """Off in params.yaml (the DVC pipeline), on in the tiny preset (a short audit run)."""
    from medsec.config import REPO_ROOT

    assert not load_config(REPO_ROOT / "params.yaml").deepfake.canary.enabled
    tiny = load_config(preset="tiny").deepfake.canary
    assert tiny.enabled and tiny.epochs is not None and tiny.epochs <= 3


def test_deepfake_stage_audits_the_dp_gan_below_its_epsilon():
    from medsec.stages.deepfake import canary_audit

    ref = _reference()
    assert canary_audit(load_config(overrides=TINY_GAN), ref, 3.0) is None
    cfg = load_config(overrides=[*TINY_GAN, "deepfake.canary.enabled=true",
                                 "deepfake.canary.num_canaries=100"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        audit = canary_audit(cfg, ref, 3.0)
    assert audit is not None and audit.num_canaries == 100
    # the accountant's epsilon of the audited run: the DP-GAN's target (delta 1/(10 N))
    assert 2.0 < audit.epsilon <= 3.0 + 1e-6 and audit.delta == pytest.approx(1 / 1280)
    assert 0.0 <= audit.epsilon_audit_lower <= audit.epsilon
    assert audit.inserted > 50  # ~50 included x 2 epochs x 4 steps x q = 1/4: canaries went in
    metrics = audit.metrics()
    assert metrics["epsilon_audit_lower"] <= metrics["epsilon"]


FED = ["model.name=small_cnn", "model.norm=group", "train.batch_size=32", "train.lr=0.01",
       "train.optimizer=sgd", "train.num_threads=1", "federated.num_clients=2",
       "federated.rounds=2", "federated.client_dp.target_epsilon=2.0",
       "federated.canary.num_canaries=100"]


def test_federated_stage_audits_one_hospitals_client_dp_below_its_epsilon():
    from medsec.stages.federated import canary_audit
    from tests.unit.federated_fixtures import tiny_dataset

    data = tiny_dataset(256, 32)
    # off unless both the audit and client DP are on
    assert canary_audit(load_config(preset="tiny", overrides=[
        *FED, "federated.client_dp.enabled=true", "federated.canary.enabled=false"]),
        data) is None
    assert canary_audit(load_config(preset="tiny", overrides=[
        *FED, "federated.canary.enabled=true"]), data) is None
    cfg = load_config(preset="tiny", overrides=[*FED, "federated.client_dp.enabled=true",
                                                "federated.canary.enabled=true"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        audit = canary_audit(cfg, data)
    assert audit is not None and audit.num_canaries == 100
    # hospital 0 holds half of the 128 training images the tiny preset keeps: delta 1/(10 x 64);
    # the audited round is the first of two, so its epsilon is below the 2-round target 2.0
    assert audit.delta == pytest.approx(1 / 640)
    assert 0.3 < audit.epsilon < 2.0 and math.isfinite(audit.epsilon)
    assert 0.0 <= audit.epsilon_audit_lower <= audit.epsilon
    assert audit.inserted > 10  # ~50 included x 2 steps x q = 1/2: the canaries went in
