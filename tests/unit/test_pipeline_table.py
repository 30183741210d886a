"""The stage table is the one declaration: dvc.yaml, prefect.yaml, the CLI and the presets
agree with it."""

from __future__ import annotations

import ast

import yaml

from medsec.config import REPO_ROOT, load_config
from medsec.stages.pipeline import STAGE_NAMES, STAGES, benchmark_stages, dvc_yaml


def test_committed_dvc_yaml_is_the_table():
    committed = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())
    assert committed == dvc_yaml(), "regenerate: python -m medsec.stages.pipeline"


def test_every_later_stage_reads_prepared_not_raw_data():
    stages = dvc_yaml()["stages"]
    assert stages["data"]["deps"][0] == "data" and stages["data"]["outs"] == ["prepared"]
    assert set(stages["data"]["params"]) == {"dataset", "phantoms"}
    for name, stage in stages.items():
        if name != "data":
            assert "prepared" in stage["deps"] and "data" not in stage["deps"], name


def test_prefect_yaml_deploys_every_capability_stage():
    doc = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())
    entrypoints = {d["entrypoint"] for d in doc["deployments"]}
    for stage in STAGES:
        if stage.deployed:
            assert stage.entrypoint in entrypoints, stage.name
    known = {s.entrypoint for s in STAGES} | {"flows/benchmark.py:benchmark_flow"}
    assert entrypoints <= known


def test_flows_resolve_and_cli_lists_the_table():
    from flows.cli import STAGES as CLI_STAGES

    assert CLI_STAGES == STAGE_NAMES
    for stage in STAGES:  # each flow exists (read, not imported: importing is slow)
        module, func = stage.flow.split(":")
        path = REPO_ROOT / f"{module.replace('.', '/')}.py"
        defined = {n.name for n in ast.parse(path.read_text()).body
                   if isinstance(n, ast.FunctionDef)}
        assert func in defined, stage.flow
        assert stage.entrypoint == f"{module.replace('.', '/')}.py:{func}"
    assert [s.name for s in benchmark_stages()] == [
        "data", "validate", "train", "evaluate", "attack"]


def test_params_yaml_is_the_default_preset():
    assert load_config(REPO_ROOT / "params.yaml") == load_config(preset="default")
