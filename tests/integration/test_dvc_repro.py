"""End-to-end ``dvc repro`` of a tiny preset in a temporary copy of the repo (real DVC)."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.integration.helpers import BIN, copy_repo, env_with, run

pytestmark = pytest.mark.integration


def _set_params(repo, **changes):
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        node = params
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    path.write_text(yaml.safe_dump(params))


# The foundation stages (validate -> train -> evaluate); later stages have their own flow tests.
TARGET = "evaluate"


def test_dvc_repro_then_noop_then_partial(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    env = env_with(MEDSEC_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow/mlflow.db")
    dvc, medsec = str(BIN / "dvc"), str(BIN / "medsec")
    out = run([medsec, "data", "init"], repo, env)
    assert out.returncode == 0, out.stderr
    # the raw folder it creates is byte-identical to the version data.dvc records
    assert run([dvc, "add", "-q", "data"], repo, env).returncode == 0
    diff = run(["git", "diff", "--exit-code", "data.dvc"], repo, env)
    assert diff.returncode == 0, diff.stdout
    out = run([dvc, "status", "data.dvc"], repo, env)
    assert out.returncode == 0 and "up to date" in out.stdout, out.stdout + out.stderr

    _set_params(repo, **{"dataset.max_train": 128, "dataset.max_eval": 64, "train.epochs": 1})
    out = run([dvc, "repro", TARGET], repo, env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for rel in ("metrics/validation.json", "metrics/train.json", "metrics/evaluate.json",
                "models/classifier.pt", "reports/validation/report.json", "plots/confusion.png"):
        assert (repo / rel).is_file(), rel
    assert "test_auc" in json.loads((repo / "metrics/evaluate.json").read_text())

    out = run([dvc, "repro", TARGET], repo, env)
    assert out.returncode == 0
    assert "Running stage" not in out.stdout, out.stdout

    _set_params(repo, **{"train.epochs": 2})
    out = run([dvc, "repro", TARGET], repo, env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Running stage 'train'" in out.stdout and "Running stage 'evaluate'" in out.stdout
    assert "Running stage 'validate'" not in out.stdout
    shown = run([dvc, "metrics", "show", "--json"], repo, env)
    assert shown.returncode == 0 and "test_acc" in shown.stdout


def test_data_param_change_reruns_data_and_dependants(tmp_path):
    """Changing ``phantoms.n_train`` marks the data stage and every stage reading prepared/
    as changed (it used to re-run nothing and silently reuse the old data)."""
    repo = copy_repo(tmp_path / "repo")
    env = env_with(MEDSEC_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow/mlflow.db")
    dvc = str(BIN / "dvc")
    assert run([str(BIN / "medsec"), "data", "init"], repo, env).returncode == 0
    assert run([dvc, "add", "-q", "data"], repo, env).returncode == 0
    _set_params(repo, **{"phantoms.n_train": 24, "phantoms.n_val": 8, "phantoms.n_test": 8})
    out = run([dvc, "repro", "validate"], repo, env)  # data -> validate
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    out = run([dvc, "status", "validate"], repo, env)
    assert "up to date" in out.stdout, out.stdout

    _set_params(repo, **{"phantoms.n_train": 32})
    out = run([dvc, "status", "--with-deps", "validate"], repo, env)
    assert "data:" in out.stdout and "modified:           phantoms" in out.stdout, out.stdout
    out = run([dvc, "repro", "validate"], repo, env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    # data re-runs (or is restored from DVC's run cache) and so does the stage reading it
    assert ("Running stage 'data'" in out.stdout
            or "Stage 'data' is cached" in out.stdout), out.stdout
    assert "Running stage 'validate'" in out.stdout, out.stdout
    info = json.loads((repo / "prepared" / "dataset.json").read_text())
    assert info["counts"]["train"] == 32
    report = json.loads((repo / "metrics" / "validation.json").read_text())
    assert report, report
