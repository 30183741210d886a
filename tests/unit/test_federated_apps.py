"""The deployment apps (``flwr run``) wired in-process: config from the run config, hospital
from the node config, CKKS keys from files (server: public only), outputs on disk."""

from __future__ import annotations

import importlib
import json
import logging
import tomllib
from pathlib import Path

import pytest
from flwr.app import Context, RecordDict

from medsec.errors import ConfigError
from medsec.federated import apps
from medsec.federated.grid import InProcessGrid
from medsec.stages import federated as stage
from medsec.training.checkpoint import load_classifier

logging.getLogger("flwr").setLevel(logging.WARNING)
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("secure", ["ckks", "secaggplus"])
def test_deployment_apps_run_a_federation(tmp_path, phantom_dir, secure):
    config = tmp_path / "fl.yaml"
    config.write_text(
        f"dataset: {{name: phantoms, data_dir: '{phantom_dir}', max_train: 64, max_eval: 32}}\n"
        f"train: {{batch_size: 32}}\n"
        f"federated: {{num_clients: 2, rounds: 1, secure_aggregation: {secure}}}\n")
    apps.keygen(tmp_path / "keys")
    run_config = {"config": str(config), "output-dir": str(tmp_path / "out"),
                  "he-public-key": str(tmp_path / "keys" / "public.ckks")}
    nodes = [{"partition-id": i, "num-partitions": 2,
              "he-secret-key": str(tmp_path / "keys" / "secret.ckks")} for i in range(2)]
    grid = InProcessGrid(stage.client_app, nodes, run_config=run_config)
    stage.server_app(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),
                                   run_config=run_config))
    model, meta = load_classifier(tmp_path / "out" / "federated.pt")
    assert meta["federated"] is True and meta["dataset"] == "phantoms"
    history = json.loads((tmp_path / "out" / "history.json").read_text())
    assert set(history["global_metrics"]) == {"0", "1"}
    if secure == "ckks":  # the server kept only the public context
        context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),
                          run_config=run_config)
        plan = apps.server_plan(stage.deployment, context)
        assert plan.he_public is not None and not apps.he.is_private(plan.he_public)


def test_node_config_must_match_the_federation(tmp_path, phantom_dir):
    config = tmp_path / "fl.yaml"
    config.write_text(f"dataset: {{name: phantoms, data_dir: '{phantom_dir}'}}\n"
                      "federated: {num_clients: 2}\n")
    context = Context(run_id=1, node_id=5, node_config={"partition-id": 0, "num-partitions": 3},
                      state=RecordDict(), run_config={"config": str(config)})
    with pytest.raises(ConfigError, match="num-partitions=3 but federated.num_clients=2"):
        apps.hospital_site(stage.deployment, context)


def test_flower_app_points_at_the_stage_apps():
    from flwr.supercore.object_ref import validate

    from tasks import federated_app

    toml = tomllib.loads((ROOT / "federated_app" / "pyproject.toml").read_text())
    components = toml["tool"]["flwr"]["app"]["components"]
    for key, app in (("serverapp", federated_app.server_app), ("clientapp", stage.client_app)):
        module, name = components[key].split(":")
        assert getattr(importlib.import_module(module), name) is app
        # `flwr run` checks the reference statically (a tuple assignment is not found)
        assert validate(components[key], project_dir=ROOT / "federated_app") == (True, None)
