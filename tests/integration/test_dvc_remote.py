"""DVC remote round trip: a fresh clone pushes its data and model to the default remote (a
local directory here; S3 in the README), another fresh clone pulls them back, hash for hash."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.integration.helpers import BIN, copy_repo, env_with, run
from tests.integration.test_dvc_repro import _set_params

pytestmark = pytest.mark.integration
TARGETS = ("--with-deps", "data.dvc", "train")
TRACKED = ("data", "prepared", "reports/validation", "models/classifier.pt",
           "models/classifier.json")


def _hashes(repo: Path) -> dict[str, str]:
    """md5 of every file under the DVC-tracked paths, by path relative to ``repo``."""
    found = {}
    for rel in TRACKED:
        root = repo / rel
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for path in files:
            if path.is_file():
                found[str(path.relative_to(repo))] = hashlib.md5(path.read_bytes()).hexdigest()
    return found


def _ok(out) -> str:
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def test_push_then_pull_in_fresh_clone_restores_data_and_model(tmp_path):
    source = copy_repo(tmp_path / "source")
    env = env_with(MEDSEC_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow/mlflow.db",
                   OMP_NUM_THREADS="1")
    dvc, git, medsec = str(BIN / "dvc"), "git", str(BIN / "medsec")
    first = tmp_path / "first"
    _ok(run([git, "clone", "-q", str(source), str(first)], tmp_path, env))
    assert "local" in _ok(run([dvc, "remote", "default"], first, env))  # configured, committed
    remote = tmp_path / "remote"  # the default remote's URL, redirected for this test only
    _ok(run([dvc, "remote", "modify", "--local", "local", "url", str(remote)], first, env))

    _set_params(first, **{"phantoms.n_train": 64, "phantoms.n_val": 32, "phantoms.n_test": 32,
                          "train.epochs": 1})
    _ok(run([medsec, "data", "init", "--phantoms"], first, env))  # data/ with a fixed set
    _ok(run([dvc, "add", "-q", "data"], first, env))
    _ok(run([dvc, "repro", "train"], first, env, timeout=1200))
    git_id = ["-c", "user.email=t@medsec.local", "-c", "user.name=MedSec tests"]
    _ok(run([git, *git_id, "commit", "-qam", "data and model"], first, env))
    pushed = _hashes(first)
    assert {"models/classifier.pt", "models/classifier.json"} <= set(pushed)
    assert any(k.startswith("data/") for k in pushed) and any(
        k.startswith("prepared/") for k in pushed)
    # what this clone produced: data.dvc and the train stage with its upstream stages (the
    # committed dvc.lock also names later stages' outputs, which this clone never made)
    _ok(run([dvc, "push", *TARGETS], first, env))
    assert any(p.is_file() for p in remote.rglob("*"))

    second = tmp_path / "second"
    _ok(run([git, "clone", "-q", str(first), str(second)], tmp_path, env))
    assert not (second / "models" / "classifier.pt").exists() and not (second / "data").exists()
    _ok(run([dvc, "remote", "modify", "--local", "local", "url", str(remote)], second, env))
    _ok(run([dvc, "pull", *TARGETS], second, env))
    assert _hashes(second) == pushed
    status = _ok(run([dvc, "status", *TARGETS], second, env))
    assert "up to date" in status, status
