"""The audit's data sets: deduplicated by content, disjoint, the target's training split only;
the reference models' top-up; the headline is the declared attack."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import medsec.privacy.audit as audit_module
from medsec.config import load_config
from medsec.data.types import ImageDataset
from medsec.errors import DataError
from medsec.privacy.audit import _topped_up
from medsec.privacy.audit_sets import Examples, audit_data, content_hashes


def _images(n: int, offset: int) -> np.ndarray:
    """n distinct images (value k/255 at pixel k % 64), ids offset..offset+n-1."""
    out = np.zeros((n, 1, 8, 8), np.float32)
    for i in range(n):
        out[i, 0].flat[(offset + i) % 64] = ((offset + i) // 64 + 1) / 255
    return out


def _split(images: np.ndarray) -> ImageDataset:
    return ImageDataset(images, (np.arange(len(images)) % 2).astype(np.int64))


def _hashes(t: torch.Tensor) -> set[str]:
    return set(content_hashes(t.numpy()))


def test_sets_are_deduplicated_and_disjoint_by_content():
    train = _images(60, 0)
    train[1] = train[0]  # a duplicate inside the training split
    heldout = _images(50, 1000)
    heldout[:5] = train[10:15]  # 5 training images also stored in val/test (PneumoniaMNIST-like)
    heldout[6] = heldout[7]  # a duplicate inside the held-out images
    audit = load_config(overrides=["privacy.audit.num_members=20",
                                   "privacy.audit.num_nonmembers=30",
                                   "privacy.audit.num_population=30"]).privacy.audit
    sets = audit_data(_split(train), _split(heldout), _split(_images(10, 2000)), audit, seed=0)
    members, nonmembers = _hashes(sets.members.images), _hashes(sets.nonmembers.images)
    rmia_z, population = _hashes(sets.rmia_population.images), _hashes(sets.population.images)
    shared = set(content_hashes(train[10:15]))
    assert len(sets.members) == len(members) == 20  # no duplicate is audited twice
    assert not (members | nonmembers | rmia_z) & shared  # ambiguous images: neither
    assert not members & nonmembers and not rmia_z & (members | nonmembers)
    assert not population & (members | nonmembers | rmia_z)
    assert population <= set(content_hashes(train))  # attacker pool: training split only
    # 44 distinct held-out images outside the training split, shared pro rata 30:30
    assert len(sets.nonmembers) + len(sets.rmia_population) == 44
    assert len(sets.nonmembers) == 22 and sets.train_size == 60
    assert sets.counts["audit_duplicates_across_splits"] == 5
    assert sets.counts["audit_duplicates_within_train"] == 1
    again = audit_data(_split(train), _split(heldout), _split(_images(10, 2000)), audit, seed=0)
    assert torch.equal(again.members.images, sets.members.images)  # seeded


def test_non_members_come_only_from_the_in_distribution_split():
    audit = load_config(overrides=["privacy.audit.num_members=20",
                                   "privacy.audit.num_nonmembers=25",
                                   "privacy.audit.num_population=30"]).privacy.audit
    val, test = _images(30, 1000), _images(40, 3000)  # "test" stands for a shifted split
    sets = audit_data(_split(_images(60, 0)), _split(val), _split(test), audit, seed=1,
                      spare=_split(test))
    assert _hashes(sets.nonmembers.images) <= set(content_hashes(val))
    assert len(sets.nonmembers) == 25 and len(sets.rmia_population) == 30
    rmia_z = _hashes(sets.rmia_population.images)
    assert len(rmia_z & set(content_hashes(val))) == 5  # val leftovers first, then test
    assert not rmia_z & _hashes(sets.nonmembers.images)


def test_too_little_held_out_data_is_a_clear_error():
    audit = load_config().privacy.audit
    train = _images(40, 0)
    with pytest.raises(DataError, match="too few distinct images"):
        audit_data(_split(train), _split(train[:30]), _split(train[:4]), audit, seed=0)


def test_reference_training_sets_are_topped_up_to_the_target_size():
    seen = []

    def record(images, labels, seed):
        seen.append((len(labels), seed))
        return torch.nn.Identity()

    pool = Examples(torch.rand(30, 1, 8, 8), torch.zeros(30, dtype=torch.long))
    fn = _topped_up(record, pool, size=25)
    fn(torch.rand(10, 1, 8, 8), torch.zeros(10, dtype=torch.long), 3)
    fn(torch.rand(10, 1, 8, 8), torch.zeros(10, dtype=torch.long), 4)
    _topped_up(record, pool, size=100)(torch.rand(10, 1, 8, 8),
                                       torch.zeros(10, dtype=torch.long), 5)
    assert seen == [(25, 3), (25, 4), (40, 5)]  # capped by the pool


def test_no_strongest_attack_selection_and_declared_attack_validated():
    from pydantic import ValidationError

    from medsec.privacy.config import AuditConfig

    assert not hasattr(audit_module, "strongest_attack")  # no max over attacks anywhere
    assert AuditConfig().declared_attack == "lira_online"
    with pytest.raises(ValidationError, match="declared_attack"):
        AuditConfig(attacks=("loss",), declared_attack="rmia")


def test_non_members_are_never_images_that_selected_the_model():
    from medsec.data.types import LoadedDataset
    from medsec.stages.privacy import audit_sets

    train, val, test = _images(60, 0), _images(30, 1000), _images(40, 3000)
    data = LoadedDataset(name="phantoms", splits={"train": _split(train), "val": _split(val),
                                                  "test": _split(test)},
                         num_classes=2, class_names=["a", "b"], source_path="memory",
                         version="test", verification="synthetic", synthetic=True)
    cfg = load_config(overrides=["privacy.audit.num_members=20",
                                 "privacy.audit.num_nonmembers=20",
                                 "privacy.audit.num_population=10"])
    val_h, test_h = set(content_hashes(val)), set(content_hashes(test))
    for meta in ({"selection": "best validation AUC"}, {}):  # the default checkpoint; unknown
        sets = audit_sets(cfg, data, meta)
        assert _hashes(sets.nonmembers.images) <= test_h
        assert not _hashes(sets.rmia_population.images) & val_h
        assert sets.nonmembers_from.startswith("test")  # stated in the audit's record
    kept_last = audit_sets(cfg, data, {"selection": "last epoch"})
    assert _hashes(kept_last.nonmembers.images) <= val_h and kept_last.nonmembers_from == "val"
    # the sweep's models keep their last epoch unless validation is declared public
    assert audit_sets(cfg, data).nonmembers_from == "val"
    public = load_config(overrides=["privacy.dp.val_is_public=true"])
    assert audit_sets(public, data).nonmembers_from.startswith("test")


def test_checkpoint_audit_reports_the_declared_attack_with_intervals_and_resolution():
    from torch import nn

    from medsec.privacy.audit import run_audit
    from medsec.privacy.plain_train import make_train_fn

    def mlp() -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 2))

    rng = np.random.default_rng(0)
    train = _split(_images(120, 0))
    train = ImageDataset(train.images, rng.integers(0, 2, 120).astype(np.int64))  # random labels
    heldout = ImageDataset(_images(120, 1000), rng.integers(0, 2, 120).astype(np.int64))
    audit = load_config(overrides=[
        "privacy.audit.num_members=60", "privacy.audit.num_nonmembers=60",
        "privacy.audit.num_population=30", "privacy.audit.attacks=[loss,lira]",
        "privacy.audit.num_reference=4", "privacy.audit.declared_attack=lira_offline",
    ]).privacy.audit
    sets = audit_data(train, heldout, _split(_images(10, 3000)), audit, seed=0)
    train_fn = make_train_fn(mlp, epochs=30, lr=3e-3, batch_size=32)
    model = train_fn(*Examples.of(train).__dict__.values(), 0)
    result = run_audit(model, {"num_classes": 2}, sets, audit, train_fn, seed=0)
    m = result.metrics
    assert result.declared == "lira_offline" and m["mia_auc"] == m["mia_lira_offline_auc"]
    assert m["mia_auc_ci_low"] <= m["mia_auc"] <= m["mia_auc_ci_high"]
    assert m["mia_n_members"] == 60 and m["mia_n_reference_models"] == 4
    assert m["mia_tpr_at_1pct_fpr"] is None and "60 non-members" in (
        result.null_reasons["mia_tpr_at_1pct_fpr"])
    assert "60 members / 60 non-members" in result.notes[0]
