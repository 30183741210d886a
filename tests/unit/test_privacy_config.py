"""``privacy:`` config and DP-SGD through the project's train path: bad input gives clear errors
naming the field (or the layer); a good config trains privately and records its epsilon."""

from __future__ import annotations

import dataclasses
import secrets
import sys
import types
import warnings

import numpy as np
import pytest
import torch

from medsec.config import config_from_dict, load_config
from medsec.data.types import ImageDataset, LoadedDataset
from medsec.errors import ConfigError
from medsec.privacy.accounting import epsilon_reference
from medsec.privacy.audit import target_recipe
from medsec.privacy.sweep import record_label
from medsec.stages.classifier import recipe
from medsec.stages.classifier import train as train_classifier
from medsec.stages.privacy import sweep_points
from medsec.training.checkpoint import load_classifier, save_classifier
from medsec.training.job import build_module, channel_stats

pytestmark = pytest.mark.usefixtures("one_thread")

N_TRAIN = 32



def _split(n: int, seed: int) -> ImageDataset:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = rng.random((n, 1, 16, 16), dtype=np.float32) * 0.5
    images[labels == 1, :, 4:12, 4:12] += 0.5  # a bright square: learnable
    return ImageDataset(images, labels.astype(np.int64))


@pytest.fixture(scope="module")
def data() -> LoadedDataset:
    splits = {"train": _split(N_TRAIN, 0), "val": _split(16, 1), "test": _split(16, 2)}
    return LoadedDataset(name="phantoms", splits=splits, num_classes=2,
                         class_names=["no lesion", "lesion"], source_path="memory",
                         version="test", verification="synthetic", synthetic=True)


def _cfg(*overrides: str):
    return load_config(overrides=["train.epochs=2", "train.batch_size=8", "model.norm=group",
                                  *overrides])


def _train(cfg, data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return train_classifier(cfg, data)


# --------------------------------------------------------------------------- the config


def test_defaults_are_non_private_with_the_standard_sweep():
    privacy = load_config().privacy
    assert not privacy.dp.enabled and privacy.dp.accountant == "prv"
    assert privacy.sweep == (1.0, 3.0, 8.0) and privacy.sweep_baseline
    assert set(privacy.audit.attacks) == {"loss", "shadow", "lira", "rmia", "extraction",
                                          "inversion"}


@pytest.mark.parametrize(("overrides", "match"), [
    (["privacy.dp.enabled=true"], r"privacy\.dp: .*exactly one of noise_multiplier"),
    (["privacy.dp.enabled=true", "privacy.dp.noise_multiplier=1", "privacy.dp.target_epsilon=3"],
     r"privacy\.dp: .*exactly one"),
    (["privacy.dp.noise_multiplier=0.1", "privacy.dp.enabled=true"], r"privacy\.dp: .*PRV"),
    (["privacy.dp.delta=1.5"], r"privacy\.dp\.delta"),
    (["privacy.dp.accountant=moments"], r"privacy\.dp\.accountant"),
    (["privacy.dp.max_grad_norm=0"], r"privacy\.dp\.max_grad_norm"),
    (["privacy.sweep=[3,0]"], r"privacy\.sweep: .*> 0"),
    (["privacy.sweep=[]", "privacy.sweep_baseline=false"], r"privacy: .*empty sweep"),
    (["privacy.audit.num_reference=5"], r"privacy\.audit\.num_reference: .*even"),
    (["privacy.audit.attacks=[loss,loss]"], r"privacy\.audit\.attacks"),
    (["privacy.audit.attacks=[magic]"], r"privacy\.audit\.attacks"),
    (["privacy.audit.extraction.budgets=[10,10]"], r"privacy\.audit\.extraction\.budgets"),
    (["privacy.audit.typo=1"], r"privacy\.audit\.typo: unknown key"),
])
def test_bad_privacy_config_names_the_field(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(overrides=overrides)


# --------------------------------------------------------------------------- the train path


def test_unreachable_target_epsilon_names_the_field(data):
    cfg = _cfg("privacy.dp.enabled=true", "privacy.dp.target_epsilon=0.01", "train.epochs=5")
    with pytest.raises(ConfigError, match=r"privacy\.dp\.target_epsilon: .*0\.01 is unreachable "
                                          r"with 20 steps"):
        _train(cfg, data)


def test_delta_of_at_least_one_over_n_names_the_field(data):
    cfg = _cfg("privacy.dp.enabled=true", "privacy.dp.noise_multiplier=1", "privacy.dp.delta=0.05")
    with pytest.raises(ConfigError, match=r"privacy\.dp\.delta: .*must be < 1/N .*N=32"):
        _train(cfg, data)


def test_batchnorm_model_with_dp_names_the_layer_and_the_fix(data):
    cfg = _cfg("privacy.dp.enabled=true", "privacy.dp.noise_multiplier=1", "model.norm=batch")
    with pytest.raises(ConfigError, match=r"model\.norm: .*'backbone\.net\.layer_0\.adn\.N' "
                                          r"\(BatchNorm2d\).*set model\.norm=group"):
        _train(cfg, data)


def test_dp_training_records_its_epsilon(data, tmp_path):
    cfg = _cfg("privacy.dp.enabled=true", "privacy.dp.noise_multiplier=1.0",
               "privacy.dp.accountant=rdp")
    trained = _train(cfg, data)
    record = trained.meta["privacy"]
    steps_per_epoch = N_TRAIN // 8
    assert record["mechanism"] == "dp-sgd" and record["steps"] == 2 * steps_per_epoch
    assert record["sample_rate"] == pytest.approx(1 / steps_per_epoch)
    assert record["delta"] == pytest.approx(1 / (10 * N_TRAIN))
    expected = epsilon_reference(1.0, 1 / steps_per_epoch, 2 * steps_per_epoch,
                                 1 / (10 * N_TRAIN), "rdp")
    assert record["epsilon"] == pytest.approx(expected, rel=1e-2)
    # epsilon per epoch in the history (what the train flow streams to MLflow)
    per_epoch = [h["epsilon"] for h in trained.fit.history]
    assert per_epoch == record["epsilon_per_epoch"] and per_epoch[0] < per_epoch[1]
    assert per_epoch[1] == pytest.approx(record["epsilon"])
    # DP keeps the last epoch (validation not public by default); no Opacus hooks remain
    assert trained.fit.best_epoch == 1 and record["selection"] == "last epoch"
    assert trained.meta["selection"] == "last epoch" and record["noise"] == "seeded"
    assert not any(hasattr(p, "grad_sample") for p in trained.model.parameters())
    # the record travels with the checkpoint (weights_only loading)
    _, meta = load_classifier(save_classifier(tmp_path / "dp.pt", trained.model, trained.meta))
    assert meta["privacy"] == record and record_label(record) == "dp-sgd"
    assert list(record) == [  # the checkpoint's and MLflow's keys, in this order
        "mechanism", "epsilon", "delta", "accountant", "sample_rate", "steps",
        "noise_multiplier", "max_grad_norm", "target_epsilon", "num_examples", "epochs",
        "poisson_sampling", "epsilon_per_epoch", "selection", "noise", "normalisation"]
    # the audit's shadow/reference models train like it: same network and noise, RDP
    ref, dp = target_recipe(recipe(_cfg("model.norm=batch", "model.dropout=0.5")),
                            cfg.privacy.dp.model_copy(update={"enabled": False}), meta)
    assert ref.model == recipe(cfg).model and ref.train == recipe(cfg).train
    assert dp.enabled and dp.noise_multiplier == 1.0 and dp.accountant == "rdp"
    assert dp.delta is None and dp.target_epsilon is None
    assert not target_recipe(ref, dp, {**meta, "privacy": {"mechanism": "none"}})[1].enabled


def test_non_private_training_is_recorded_as_such(data):
    trained = _train(_cfg(), data)
    assert trained.meta["privacy"] == {"mechanism": "none"}
    assert trained.meta["selection"] == "best validation AUC"  # train.select_best (default)
    assert "epsilon" not in trained.fit.history[0] and record_label(trained.meta["privacy"]) == (
        "none")


def _dp_one_epoch(*overrides: str):
    return _cfg("privacy.dp.enabled=true", "privacy.dp.noise_multiplier=1.0",
                "privacy.dp.accountant=rdp", "train.epochs=1", *overrides)


def test_dp_normalisation_does_not_depend_on_the_training_images(data):
    train = data.splits["train"]
    brighter = dataclasses.replace(data, splits={**data.splits, "train": ImageDataset(
        train.images * 0.3 + 0.6, train.labels)})
    buffers = []
    for dataset in (data, brighter):
        trained = _train(_dp_one_epoch(), dataset)
        assert trained.meta["privacy"]["normalisation"] == "fixed"
        buffers.append(torch.cat([trained.model.normalize.mean, trained.model.normalize.std]))
    assert torch.equal(buffers[0], buffers[1])  # nothing of the private images outside DP-SGD
    # the non-private path still normalises with its training split's statistics
    plain = _train(_cfg("train.epochs=1"), brighter).model.normalize
    mean, std = channel_stats(brighter.splits["train"].images)
    assert plain.mean.flatten().tolist() == pytest.approx(mean)
    assert plain.std.flatten().tolist() == pytest.approx(std)
    assert mean != pytest.approx(buffers[0][:1].flatten().tolist())


def test_secure_noise_needs_torchcsprng_and_is_tagged(data, monkeypatch):
    cfg = _dp_one_epoch("privacy.dp.secure_mode=true")
    monkeypatch.setitem(sys.modules, "torchcsprng", None)  # not installable here: ImportError
    with pytest.raises(ConfigError, match=r"privacy\.dp\.secure_mode: .*torchcsprng"):
        _train(cfg, data)
    calls = []

    def urandom_generator(path: str) -> torch.Generator:  # stands in for torchcsprng's
        calls.append(path)
        return torch.Generator().manual_seed(secrets.randbits(63))

    fake = types.ModuleType("torchcsprng")
    fake.create_random_device_generator = urandom_generator  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torchcsprng", fake)
    assert _train(cfg, data).meta["privacy"]["noise"] == "secure"
    assert calls == ["/dev/urandom"]  # Opacus' engine ran in secure mode


def test_empty_poisson_batch_is_a_clean_noise_only_step(data):
    module = build_module(recipe(_cfg()), data)
    loss = module.training_step((torch.zeros(0, 1, 16, 16), torch.zeros(0, dtype=torch.long)), 0)
    assert loss.requires_grad and float(loss) == 0.0
    assert module._train_losses == []  # no NaN train_loss for the epoch


# --------------------------------------------------------------------------- the sweep


def test_sweep_points_share_everything_but_dp():
    points = sweep_points(load_config(overrides=["privacy.sweep=[8,1]", "privacy.epochs=3"]))
    assert [p.label for p in points] == ["none", "dp-eps1", "dp-eps8"]
    assert {p.cfg.train.epochs for p in points} == {3}
    assert [p.target_epsilon for p in points] == [None, 1.0, 8.0]
    assert all(p.cfg.model.norm == "group" and not p.cfg.train.select_best for p in points)
    assert not points[0].cfg.privacy.dp.enabled
    assert points[2].cfg.privacy.dp.enabled and points[2].cfg.privacy.dp.target_epsilon == 8.0
    assert {p.cfg.seed for p in points} == {0}
    public = sweep_points(config_from_dict({"privacy": {"dp": {"val_is_public": True},
                                                        "sweep_baseline": False}}))
    assert [p.label for p in public] == ["dp-eps1", "dp-eps3", "dp-eps8"]
    assert all(p.cfg.train.select_best for p in public)
    assert record_label({"mechanism": "dp-sgd", "target_epsilon": 3.0}) == "dp-eps3"
