"""Own data with a ``site`` column: the federated stage makes one client per hospital."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medsec.config import load_config
from medsec.data.prepare import prepare_dataset
from medsec.federated.partition import PartitionError, site_indices
from medsec.federated.simulation import run_federation, setup_federation
from medsec.stages import classifier
from medsec.stages import federated as stage
from medsec.stages.data import data_source
from tests.unit.own_data_fixtures import make_manifest, manifest_dataset


def _cfg(root: Path, *extra: str):
    return load_config(overrides=[
        "dataset.source=manifest", "dataset.name=own", "dataset.path=manifest.csv",
        f"dataset.data_dir={root}", "dataset.image_size=16", "model.name=small_cnn",
        "train.batch_size=8", "train.num_threads=1", "federated.rounds=1",
        "federated.compare_centralized=false", *extra])


@pytest.fixture(scope="module")
def three_sites(tmp_path_factory):
    root = tmp_path_factory.mktemp("sites")
    rows = manifest_dataset(root, n_patients=9, per_patient=2, size=16, sites=3)
    make_manifest(root, rows)
    cfg = _cfg(root, "federated.num_clients=3")
    return cfg, prepare_dataset(data_source(cfg), root / "prepared"), rows


def test_one_client_per_site_with_exactly_that_sites_examples(three_sites):
    cfg, data, rows = three_sites
    assert cfg.federated.partition == "iid"
    cfg = stage.by_site(cfg, data)
    assert cfg.federated.partition == "site"
    train = classifier.recipe(cfg).split(data, "train")
    setup = setup_federation(cfg.federated, classifier.recipe(cfg), data)
    assert len(setup.sites) == 3 and setup.partition["num_sites"] == 3
    assert setup.partition["scheme"] == "site"
    # oracle: the groups of identical site keys, computed independently
    expected = sorted(np.bincount(np.unique(train.site_ids, return_inverse=True)[1]).tolist())
    assert sorted(setup.partition["sizes"]) == expected and sum(expected) == len(train)
    for site in setup.sites:  # every hospital holds the images of one site only
        keys = {k for k, img in zip(train.site_ids, train.images, strict=True)
                if any(np.array_equal(img, x) for x in site.train.images)}
        assert len(keys) == 1
    result = run_federation(cfg.federated, classifier.recipe(cfg), data)
    assert result.summary["num_sites"] == 3.0 and result.partition["scheme"] == "site"


def test_clients_disagreeing_with_sites_is_a_clear_error(three_sites):
    cfg, data, _ = three_sites
    wrong = stage.by_site(cfg.model_copy(update={"federated": cfg.federated.model_copy(
        update={"num_clients": 2})}), data)
    with pytest.raises(PartitionError, match=r"federated.num_clients=2 but the training split "
                                             r"has 3 sites .*federated.num_clients=3"):
        stage.run(wrong, data)


def test_site_rules_on_keys():
    sites = np.array(["Tb", "Ta", "Tb", "Ta", "Tc", "Tc"])
    parts = site_indices(sites, 3)
    assert [p.tolist() for p in parts] == [[1, 3], [0, 2], [4, 5]]  # sorted key order
    with pytest.raises(PartitionError, match=r"site 2 \(Tc\) has 1 training example"):
        site_indices(sites[:5], 3)
    with pytest.raises(PartitionError, match="1 training example\\(s\\) have no site"):
        site_indices(np.array(["Ta", "", "Ta"]), 1)
    with pytest.raises(PartitionError, match="carries no site keys"):
        site_indices(None, 3)


def test_data_without_sites_keeps_the_configured_partition(three_sites):
    cfg, data, _ = three_sites
    train = data.splits["train"]
    bare = data.__class__(**{**data.__dict__, "splits": {**data.splits, "train": train.__class__(
        train.images, train.labels)}})
    assert stage.by_site(cfg, bare) is cfg
