"""The ``medsec`` command line as a user meets it (real subprocesses)."""

from __future__ import annotations

import pytest

from tests.integration.helpers import BIN, env_with, run

pytestmark = pytest.mark.integration


def test_lists_and_bad_input_errors(tmp_path):
    env = env_with(MEDSEC_TRACKING_URI=f"sqlite:///{tmp_path}/m.db")
    medsec = str(BIN / "medsec")
    out = run([medsec, "models"], tmp_path, env)
    assert out.returncode == 0 and "small_cnn" in out.stdout and "densenet121" in out.stdout
    out = run([medsec, "datasets"], tmp_path, env)
    assert "pneumoniamnist" in out.stdout and "SYNTHETIC" in out.stdout
    out = run([medsec, "stage", "train", "--config", "none.yaml"], tmp_path, env)
    assert out.returncode == 2 and "config file not found" in out.stderr
    out = run([medsec, "run", "--set", "train.lr=-1"], tmp_path, env)
    assert out.returncode == 2 and "train.lr" in out.stderr
    out = run([medsec, "run", "--set", "model.name=vgg"], tmp_path, env)
    assert out.returncode == 2 and "unknown model 'vgg'" in out.stderr
    (tmp_path / "params.yaml").write_text(f"dataset:\n  name: pneumoniamnist\n"
                                          f"  data_dir: {tmp_path}\n")
    out = run([medsec, "stage", "validate"], tmp_path, env)
    assert out.returncode == 2 and "dataset file not found" in out.stderr
    assert not (tmp_path / "metrics").exists() and not (tmp_path / "models").exists()
