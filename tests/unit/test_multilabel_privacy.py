"""Membership inference, the recipe / checkpoint audits, DP-SGD and its canary audit on
multi-label data (multi-hot labels (N, L), several findings per image).

Oracles: the multi-label scores against a numpy reference written from the definitions
(``phi = log(P / (1 - P))``, ``P = prod_l sigmoid((2 y_l - 1) z_l)``, loss = mean BCE); the
attacks separate the members of a model that memorised random finding vectors (AUC > 0.8) and
not those of an untrained model (interval around 0.5), with AUCs and intervals from
:mod:`medsec.metrics.privacy`; DP-SGD's epsilon against an independent accountant.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medsec.data.prepare import prepare_dataset
from medsec.metrics.privacy import mia_summary
from medsec.privacy.lira import _true_probs, lira_scores, rmia_scores, train_reference_models
from medsec.privacy.membership import (
    ShadowModelAttack,
    label_keys,
    logit_confidence,
    loss_threshold_scores,
    per_example_loss,
)
from medsec.privacy.plain_train import make_train_fn
from medsec.stages import privacy as stage
from medsec.stages.data import data_source
from tests.unit.test_multilabel import _cfg, multilabel_manifest

pytestmark = pytest.mark.usefixtures("one_thread")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class Fixed(nn.Module):
    """A 'model' returning fixed logits (N, L) for images (N, 1, 1, 1) holding row indices."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[x.view(-1).long()]


def test_multilabel_scores_equal_numpy_reference():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, size=(40, 4))
    y = (rng.random((40, 4)) < 0.4).astype(np.float32)
    # numpy reference straight from the definitions
    p_l = np.where(y == 1, _sigmoid(z), 1 - _sigmoid(z))  # p(y_l | x)
    big_p = p_l.prod(axis=1)
    phi_ref = np.log(big_p) - np.log(1 - big_p)
    bce_ref = -(y * np.log(_sigmoid(z)) + (1 - y) * np.log(1 - _sigmoid(z))).mean(axis=1)

    logits, labels = torch.from_numpy(z), torch.from_numpy(y)
    np.testing.assert_allclose(logit_confidence(logits, labels), phi_ref, rtol=1e-9, atol=1e-9)
    model = Fixed(logits)  # queried through predict_logits (float32 outputs)
    idx = torch.arange(40, dtype=torch.float32).view(-1, 1, 1, 1)
    np.testing.assert_allclose(per_example_loss(model, idx, labels), bce_ref, rtol=1e-6)
    np.testing.assert_allclose(loss_threshold_scores(model, idx, labels), -bce_ref, rtol=1e-6)
    np.testing.assert_allclose(_true_probs(model, idx, labels), big_p, rtol=1e-6)
    # one finding: phi = (2y - 1) z, the binary case of the single-label z_y - z_other
    one = logit_confidence(logits[:, :1], labels[:, :1])
    np.testing.assert_allclose(one, (2 * y[:, 0] - 1) * z[:, 0], rtol=1e-9)
    two_class = torch.stack([torch.zeros(40, dtype=torch.float64), logits[:, 0]], dim=1)
    np.testing.assert_allclose(logit_confidence(two_class, labels[:, 0].long()), one, rtol=1e-9)
    # stable where the naive formula overflows: a confident correct member (P -> 1)
    far = logit_confidence(torch.tensor([[60.0, -60.0]]), torch.tensor([[1.0, 0.0]]))
    assert np.isfinite(far).all() and far[0] == pytest.approx(60 - np.log(2), abs=1e-6)
    # strata / per-class keys: the label-set pattern
    np.testing.assert_array_equal(label_keys(np.array([[0, 0, 0], [1, 0, 1], [0, 1, 0]])),
                                  [0, 5, 2])
    np.testing.assert_array_equal(label_keys(np.array([2, 0, 1])), [2, 0, 1])


def _memorisation_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random noise images (N,1,6,6) with random finding vectors (N,4): only memorisable."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 6, 6, generator=g), (torch.rand(n, 4, generator=g) < 0.5).float()


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 64), nn.ReLU(), nn.Linear(64, 4))


def test_membership_attacks_separate_members_of_a_memorising_model_only():
    images, labels = _memorisation_data(96, 1)
    audited_x, audited_y = images[:64], labels[:64]  # first 32 members, last 32 not
    population_x, population_y = images[64:], labels[64:]
    train_fn = make_train_fn(_mlp, epochs=150, lr=3e-3, batch_size=16, multilabel=True)
    target = train_fn(audited_x[:32], audited_y[:32], 7)
    with torch.random.fork_rng():
        torch.manual_seed(7)
        untrained = _mlp().eval()

    def auc(scores: np.ndarray):
        s = mia_summary(scores[:32], scores[32:], prefix="", n_boot=200, seed=0, warn=False)
        return s.metrics["auc"], s.metrics["auc_ci_low"], s.metrics["auc_ci_high"]

    loss_auc, low, _ = auc(loss_threshold_scores(target, audited_x, audited_y))
    assert loss_auc > 0.8 and low > 0.6, (loss_auc, low)
    null_auc, null_low, null_high = auc(loss_threshold_scores(untrained, audited_x, audited_y))
    assert null_low < 0.5 < null_high and abs(null_auc - 0.5) < 0.2, (null_auc, null_low)

    refs = train_reference_models(audited_x, audited_y, train_fn, num_models=4, seed=3)
    lira, _, _ = auc(lira_scores(target, audited_x, audited_y, refs, online=True))
    offline, _, _ = auc(lira_scores(target, audited_x, audited_y, refs, online=False))
    rmia, _, _ = auc(rmia_scores(target, audited_x, audited_y, refs, population_x,
                                 population_y, gamma=1.0))
    assert lira > 0.8 and offline > 0.8 and rmia > 0.8, (lira, offline, rmia)
    lira_null, _, _ = auc(lira_scores(untrained, audited_x, audited_y, refs, online=True))
    assert lira_null < 0.7, lira_null  # untrained: looks like no reference's "in" side

    attack = ShadowModelAttack(train_fn, num_shadow=2, features="per_class", seed=0)
    shadow = attack.fit(population_x, population_y).score(target, audited_x, audited_y)
    assert shadow.shape == (64,) and ((shadow >= 0) & (shadow <= 1)).all()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("ml_privacy")
    multilabel_manifest(root, n_patients=60)
    cfg = _cfg(root, "train.epochs=2", "privacy.audit.num_members=24",
               "privacy.audit.num_nonmembers=12", "privacy.audit.num_population=8",
               "privacy.audit.num_reference=2", "privacy.audit.num_shadow=1",
               "privacy.audit.pool_size=48",
               "privacy.audit.extraction.budgets=[8,16]", "privacy.audit.extraction.epochs=2",
               "privacy.audit.inversion.steps=5")
    return cfg, prepare_dataset(data_source(cfg), root / "prepared")


def test_checkpoint_audit_runs_every_attack_and_skips_inversion_explicitly(prepared):
    from medsec.stages import classifier

    cfg, data = prepared
    assert data.task == "multilabel"
    cfg = cfg.model_copy(update={"privacy": cfg.privacy.model_copy(update={
        "audit": cfg.privacy.audit.model_copy(update={
            "attacks": ["loss", "shadow", "lira", "rmia", "extraction", "inversion"]})})})
    trained = classifier.train(cfg, data)
    result = stage.audit(cfg, trained.model, trained.meta, data)
    m = result.metrics
    for key in ("mia_auc", "mia_auc_ci_low", "mia_auc_ci_high", "mia_loss_auc",
                "mia_shadow_auc", "mia_lira_offline_auc", "mia_rmia_auc"):
        assert m[key] is not None and 0.0 <= m[key] <= 1.0, key
    assert m["mia_n_members"] == m["audit_num_members"] and m["mia_n_nonmembers"] > 0
    # extraction per finding: agreement and accuracy are fractions of (image, finding) pairs
    for mode in ("probs", "labels"):
        assert 0.0 <= m[f"extraction_{mode}_agreement"] <= 1.0
    # inversion has no meaning for several findings per image: skipped, said so, no number
    assert "inversion" in result.skipped and not result.inversion
    assert "multi-label" in result.null_reasons["inversion"]
    assert not any(k.startswith("inversion_") for k in m)
    assert any("inversion skipped" in n for n in result.notes)


def test_recipe_audit_per_patient_on_multilabel_pool(prepared):
    cfg, data = prepared
    pool = stage.audit_pool(cfg, data)
    assert pool.labels.shape == (len(pool), 3) and pool.labels.dtype == torch.float32
    assert pool.groups is not None  # patient ids from the manifest: halves per patient
    result = stage.recipe_audit(cfg, data, pool)
    m = result.metrics
    for attack in ("loss", "lira_online", "lira_offline", "rmia"):
        assert 0.0 <= m[f"mia_{attack}_auc"] <= 1.0
        assert m[f"mia_{attack}_patient_auc"] is not None
    assert m["mia_auc"] == m["mia_lira_online_auc"]
    assert m["mia_auc_ci_low"] <= m["mia_auc"] <= m["mia_auc_ci_high"]
    # every patient entirely in or out of the target's half
    for g in np.unique(pool.groups):
        assert len(set(result.target_in[pool.groups == g].tolist())) == 1


def test_dp_sgd_trains_with_bce_and_accounts_like_single_label(prepared):
    from medsec.privacy.accounting import epsilon_reference
    from medsec.stages import classifier

    cfg, data = prepared
    dp_cfg = cfg.model_copy(update={
        "model": cfg.model.model_copy(update={"norm": "group"}),
        "privacy": cfg.privacy.model_copy(update={"dp": cfg.privacy.dp.model_copy(update={
            "enabled": True, "target_epsilon": 8.0, "noise_multiplier": None})})})
    trained = classifier.train(dp_cfg, data)
    record = trained.meta["privacy"]
    assert record["mechanism"] == "dp-sgd"
    assert all(np.isfinite(h["train_loss"]) for h in trained.fit.history)
    # the multi-label model is trained on BCE: its loss is the mean BCE of its outputs
    reference = epsilon_reference(record["noise_multiplier"], record["sample_rate"],
                                  int(record["steps"]), record["delta"], method="pld")
    assert record["epsilon"] == pytest.approx(reference, rel=0.02)
    assert record["epsilon"] <= 8.0 + 1e-6

    canary_cfg = dp_cfg.model_copy(update={"privacy": dp_cfg.privacy.model_copy(update={
        "canary": dp_cfg.privacy.canary.model_copy(update={"enabled": True,
                                                           "num_canaries": 200})})})
    audit = stage.canary_audit(canary_cfg, data)
    assert audit is not None
    assert 0.0 <= audit.metrics()["epsilon_audit_lower"] <= audit.epsilon + 1e-9


def test_deepfake_any_finding_view_is_exact(prepared):
    from medsec.stages.deepfake import task_view

    _, data = prepared
    rng = np.random.default_rng(2)
    z = rng.normal(0, 2, size=(30, 3))
    victim = Fixed(torch.from_numpy(z).float())
    view, head, converted = task_view(data, victim)
    assert converted and view.task == "multiclass" and view.num_classes == 2
    assert view.class_names == ["no finding", "any finding"] and view.version == data.version
    for name, split in data.splits.items():
        np.testing.assert_array_equal(view.splits[name].labels, split.labels.max(axis=1))
        assert view.splits[name].labels.dtype == np.int64
    idx = torch.arange(30, dtype=torch.float32).view(-1, 1, 1, 1)
    p_any = torch.softmax(head(idx).double(), dim=1)[:, 1].numpy()
    np.testing.assert_allclose(p_any, 1 - np.prod(1 - _sigmoid(z), axis=1), rtol=1e-5)
    same, same_victim, converted = task_view(view, victim)  # single-label: unchanged
    assert same is view and same_victim is victim and not converted


def test_dpddp_recipe_trains_multi_hot_with_the_same_epsilon():
    """Opacus DPDDP (one process here): multi-hot labels train with BCE; the accountant's
    epsilon depends on q, sigma and the steps only, not on the loss."""
    from medsec.privacy.ddp import DDPDPSpec, build_net, train_dp_distributed

    images, hot = _memorisation_data(64, 5)
    images = images.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3).numpy()  # 12 px
    common = {"batch_size": 16, "noise_multiplier": 1.0, "max_steps": 3, "epochs": 1}
    multi = DDPDPSpec(images, hot.numpy(), num_classes=4, **common)
    single = DDPDPSpec(images, hot[:, 0].long().numpy(), num_classes=2, **common)
    [m] = train_dp_distributed(multi, world_size=1, timeout=300)
    [s] = train_dp_distributed(single, world_size=1, timeout=300)
    assert m.steps == s.steps == 3 and m.sample_rate == s.sample_rate == 0.25
    assert m.epsilon == pytest.approx(s.epsilon, rel=1e-9) and m.epsilon > 0
    start = build_net(multi).state_dict()
    assert any(not torch.equal(start[k], v) for k, v in m.state_dict.items())
