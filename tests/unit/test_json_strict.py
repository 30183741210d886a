"""Every JSON file MedSec writes is strict JSON: no NaN/Infinity literals, null plus a reason."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from medsec.io import json_safe, write_json

REPO = Path(__file__).resolve().parents[2]


def _strict(text: str):
    def refuse(name: str):
        raise ValueError(f"non-standard JSON literal {name}")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_values_become_null_with_a_reason(tmp_path):
    path = write_json(tmp_path / "m.json", {
        "dice": 0.9, "hd95": float("nan"), "nested": {"ratio": np.float32("inf"), "ok": 1},
        "curve": [1.0, float("-inf")],
    })
    data = _strict(path.read_text())
    assert data["dice"] == 0.9 and data["hd95"] is None and data["nested"]["ratio"] is None
    assert data["curve"] == [1.0, None]
    assert data["null_reasons"] == {"hd95": "NaN: undefined for this data",
                                    "nested.ratio": "+Infinity: undefined for this data",
                                    "curve[1]": "-Infinity: undefined for this data"}


def test_finite_data_is_written_unchanged(tmp_path):
    payload = {"a": 1, "b": [0.5, 2], "c": {"d": "x"}}
    assert _strict(write_json(tmp_path / "m.json", payload).read_text()) == payload
    clean, reasons = json_safe(payload)
    assert clean == payload and reasons == {}


def test_a_json_parser_that_accepts_nan_is_not_what_we_check():
    with pytest.raises(ValueError, match="NaN"):
        _strict('{"x": NaN}')
    assert math.isnan(json.loads('{"x": NaN}')["x"])  # Python's default would let it through


@pytest.mark.parametrize("path", sorted((REPO / "metrics").glob("*.json")), ids=lambda p: p.name)
def test_every_committed_metrics_file_is_strict_json(path):
    _strict(path.read_text())


def test_json_logged_to_mlflow_is_strict(tmp_path):
    import mlflow
    from tasks.tracking import log_dict

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = mlflow.create_experiment("strict", artifact_location=tmp_path.as_uri())
    with mlflow.start_run(experiment_id=experiment) as run:
        log_dict({"auroc": float("nan"), "n": 3}, "detector/result.json")
    text = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id,
                                                    artifact_path="detector/result.json",
                                                    dst_path=str(tmp_path / "dl"))).read_text()
    assert _strict(text) == {"auroc": None, "n": 3,
                             "null_reasons": {"auroc": "NaN: undefined for this data"}}
