"""Federated learning on multi-label data (multi-hot labels (N, L), BCE): the stage runs
instead of refusing; FedAvg of BCE-trained hospitals is their example-weighted average;
partitions, poisoning and the backdoor rate work per finding; client DP and FedProx run; the
federated flow ends FINISHED in a real MLflow store."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medsec.data.types import ImageDataset, LoadedDataset
from medsec.errors import ConfigError
from medsec.federated import poisoning
from medsec.federated.arrays import load_arrays
from medsec.federated.local import train_locally
from medsec.federated.partition import label_histogram, label_skew_score, partition_indices
from medsec.federated.simulation import run_federation, run_setup, setup_federation
from medsec.stages import federated as stage
from medsec.training.predict import predict_logits
from tests.unit.federated_fixtures import SIZE, in_memory_dataset, tiny_settings


def _split(n: int, rng: np.random.Generator) -> ImageDataset:
    """Two findings: a bright left half (finding 0), a bright top half (finding 1); each
    present independently with probability 1/2 (some images have none, some both)."""
    hot = (rng.random((n, 2)) < 0.5).astype(np.float32)
    images = rng.random((n, 1, SIZE, SIZE)).astype(np.float32) * 0.4
    images[hot[:, 0] == 1, :, :, : SIZE // 2] += 0.5
    images[hot[:, 1] == 1, :, : SIZE // 2, :] += 0.5
    return ImageDataset(np.clip(images, 0.0, 1.0), hot)


def tiny_multilabel(n_train: int = 96, n_eval: int = 48, seed: int = 0) -> LoadedDataset:
    return in_memory_dataset(_split, n_train, n_eval, seed, "two_findings", ["left", "top"],
                             "tiny-ml")


@pytest.fixture(scope="module")
def data() -> LoadedDataset:
    out = tiny_multilabel()
    assert out.task == "multilabel"
    return out


def test_fedavg_of_bce_hospitals_is_their_weighted_average(data):
    """Oracle: each hospital's local BCE training redone here from the same initial weights
    and seeds, averaged with weights N_k / N; the federation's global model must equal it (and
    differ from the unweighted mean, so the weighting is what is checked)."""
    fed, recipe = tiny_settings(norm="group", num_clients=2, rounds=1, partition="dirichlet",
                                dirichlet_alpha=0.3)
    setup = setup_federation(fed, recipe, data)
    sizes = [len(s.train) for s in setup.sites]
    assert abs(sizes[0] - sizes[1]) >= 0.2 * sum(sizes), sizes
    assert all(s.train.labels.ndim == 2 for s in setup.sites)
    locals_ = []
    for site in setup.sites:
        net = site.build_net()
        load_arrays(net, setup.plan.initial, who="oracle")
        res = train_locally(net, site.train, site.val, site.num_classes, site.training,
                            seed=site.seed + 1000 * 1 + site.partition_id)
        assert np.isfinite(res.train_loss) and res.num_examples == len(site.train)
        locals_.append(res.arrays)
    w = np.asarray(sizes, float) / sum(sizes)
    expected = {k: w[0] * locals_[0][k] + w[1] * locals_[1][k] for k in locals_[0]}
    outcome = run_setup(setup)
    assert set(outcome.arrays) == set(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(outcome.arrays[key], value, rtol=1e-5, atol=1e-6,
                                   err_msg=key)
    unweighted = {k: 0.5 * (locals_[0][k] + locals_[1][k]) for k in locals_[0]}
    gap = max(float(np.abs(unweighted[k] - expected[k]).max()) for k in expected)
    assert gap > 1e-4  # the weighting is visible at this tolerance
    # the server scores the global model with BCE and exact match on the test split
    net = setup.sites[0].build_net()
    load_arrays(net, outcome.arrays, who="check")
    test = data.splits["test"]
    logits = predict_logits(net, torch.from_numpy(test.images)).double()
    y = torch.from_numpy(test.labels).double()
    metrics = outcome.global_metrics[1]
    assert metrics["test_loss"] == pytest.approx(
        float(F.binary_cross_entropy_with_logits(logits, y)), rel=1e-6)
    assert metrics["test_exact_match"] == pytest.approx(
        float(((logits >= 0) == (y == 1)).all(dim=1).double().mean()))


def test_multilabel_federation_learns_and_reports_per_finding_metrics(data):
    fed, recipe = tiny_settings(num_clients=3, rounds=3, local_epochs=2)
    result = run_federation(fed, recipe, data)
    s = result.summary
    for key in ("test_acc", "test_auc", "test_exact_match", "test_loss", "fed_val_acc",
                "fed_val_exact_match", "fed_val_loss", "label_skew"):
        assert key in s and np.isfinite(s[key]), key
    # two bright half-image findings are learnable: macro AUC well above chance after 3 rounds
    assert s["test_auc"] > 0.8, s
    assert result.meta["task"] == "multilabel"
    assert np.asarray(result.partition["label_histogram"]).shape == (3, 2)
    assert len(result.clients) == 3 and all("train_loss" in c for c in result.clients)


def test_partitions_split_images_not_label_cells():
    """Multi-hot labels (N, L): every scheme splits the N images (the old code flattened the
    labels to N*L entries), the label-skew schemes by stratum (first finding, L = none)."""
    rng = np.random.default_rng(1)
    hot = (rng.random((60, 3)) < 0.4).astype(np.float32)
    for scheme, kw in (("iid", {}), ("dirichlet", {"alpha": 0.5}),
                       ("label_skew", {"classes_per_client": 2})):
        parts = partition_indices(hot, 4, scheme, seed=0, **kw)
        joined = np.sort(np.concatenate(parts))
        np.testing.assert_array_equal(joined, np.arange(60))
    strata = np.where(hot.any(1), hot.argmax(1), 3)
    parts = partition_indices(hot, 4, "label_skew", seed=0, classes_per_client=1)
    assert [len(set(strata[p].tolist())) for p in parts] == [1, 1, 1, 1]
    hist = label_histogram(hot, parts, 3)
    np.testing.assert_array_equal(hist, np.stack([hot[p].sum(0) for p in parts]))
    assert label_skew_score(hot, parts, 3) > 0.5  # disjoint strata: strongly skewed
    iid = partition_indices(hot, 4, "iid", seed=0)
    assert label_skew_score(hot, iid, 3) < label_skew_score(hot, parts, 3)


def test_poisoning_works_per_finding(data):
    train = data.splits["train"]
    flipped = poisoning.flip_labels(train, data.num_classes)
    np.testing.assert_array_equal(flipped.labels, 1.0 - train.labels)
    assert flipped.labels.dtype == np.float32
    poisoned = poisoning.poison_with_trigger(train, 0.25, target=1, size=3, seed=0)
    changed = np.flatnonzero((poisoned.images != train.images).any(axis=(1, 2, 3)))
    assert len(changed) == 24
    np.testing.assert_array_equal(poisoned.labels[changed],
                                  np.tile([[0.0, 1.0]], (len(changed), 1)))
    rest = np.setdiff1d(np.arange(len(train)), changed)
    np.testing.assert_array_equal(poisoned.labels[rest], train.labels[rest])

    class AlwaysTop(torch.nn.Module):  # finding 1 positive (logit +1), finding 0 negative
        def forward(self, x):
            return torch.tensor([-1.0, 1.0]).expand(len(x), 2)

    test = data.splits["test"]
    assert poisoning.backdoor_success_rate(AlwaysTop(), test, 1, 3) == 1.0
    assert poisoning.backdoor_success_rate(AlwaysTop(), test, 0, 3) == 0.0


def test_label_flip_fedprox_and_client_dp_run_on_multilabel(data):
    fed, recipe = tiny_settings(norm="group", num_clients=2, rounds=1, strategy="fedprox",
                                proximal_mu=0.1,
                                attack={"kind": "label_flip", "malicious_clients": [1]})
    assert np.isfinite(run_federation(fed, recipe, data).summary["test_exact_match"])
    fed, recipe = tiny_settings(norm="group", num_clients=2, rounds=1,
                                client_dp={"enabled": True, "noise_multiplier": 1.0})
    result = run_federation(fed, recipe, data)
    assert 0 < result.summary["epsilon_client_max"] < float("inf")
    assert np.isfinite(result.summary["test_exact_match"])


def test_client_dp_canary_audit_runs_on_multilabel(data):
    """The stage refused the audit on multi-label data; its canaries are label-free, so it
    runs: lower bound within [0, the hospital's claimed epsilon]."""
    from medsec.config import load_config

    cfg = load_config(overrides=[
        "model.norm=group", "train.batch_size=32", "train.num_threads=1",
        "federated.num_clients=2", "federated.rounds=1", "federated.client_dp.enabled=true",
        "federated.client_dp.noise_multiplier=1.0", "federated.canary.enabled=true",
        "federated.canary.num_canaries=50"])
    audit = stage.canary_audit(cfg, data)
    assert audit is not None and 0.0 <= audit.epsilon_audit_lower <= audit.epsilon < np.inf


def test_gradient_inversion_is_refused_on_multilabel_in_one_line(data):
    from medsec.config import load_config

    cfg = load_config(overrides=["federated.gradient_inversion.enabled=true"])
    with pytest.raises(ConfigError, match=r"^federated\.gradient_inversion\.enabled: .*"
                                          r"multi-label"):
        stage.run(cfg, data)
    with pytest.raises(ConfigError, match="federated.gradient_inversion.enabled"):
        stage.gradient_inversion(cfg, data)


@pytest.mark.integration
def test_federated_flow_on_a_multilabel_manifest(tmp_path, monkeypatch, tracking_uri):
    """The stage that refused multi-label data: the federated flow on a 3-finding manifest with
    3 sites, one client per site, FINISHED with multi-label metrics in MLflow and on disk."""
    import mlflow
    from flows.federated import federated_flow
    from tests.unit.test_multilabel import multilabel_manifest

    raw = tmp_path / "raw"
    multilabel_manifest(raw, n_patients=24)
    monkeypatch.chdir(tmp_path)
    result = federated_flow(overrides=[
        "dataset.source=manifest", "dataset.name=own", "dataset.path=manifest.csv",
        f"dataset.data_dir={raw}", "dataset.image_size=16", "model.name=small_cnn",
        "train.batch_size=8", "train.num_threads=1", "federated.num_clients=3",
        "federated.rounds=2", "federated.local_epochs=1"])
    mlflow.set_tracking_uri(tracking_uri)
    (run,) = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert run.info.status == "FINISHED" and run.info.run_id == result["run_id"]
    assert run.data.tags["medsec.federated.partition"] == "site"
    metrics = run.data.metrics
    for key in ("test_exact_match", "test_auc", "fed_val_exact_match", "centralized_test_acc",
                "acc_gap_vs_centralized", "num_sites"):
        assert key in metrics, key
    assert metrics["num_sites"] == 3.0
    on_disk = json.loads((tmp_path / "metrics" / "federated.json").read_text())
    assert on_disk["test_acc"] == pytest.approx(metrics["test_acc"])
    full = json.loads((tmp_path / "reports" / "scorecards" / "federated.json").read_text())
    assert full["test_exact_match"] == pytest.approx(metrics["test_exact_match"])
    assert (tmp_path / "models" / "federated.pt").is_file()
