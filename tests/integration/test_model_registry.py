"""Classifiers in the MLflow registry: `models:/medsec-...@champion` loads with pyfunc and
serves with `mlflow models serve`, both answering the checkpoint's own logits."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request

import numpy as np
import pytest
import torch

from medsec.models.factory import build_classifier
from medsec.training.checkpoint import load_classifier, save_classifier
from tests.integration.helpers import BIN, env_with, free_port, stop_group

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]
NAME = "medsec-phantoms-small_cnn"


@pytest.fixture()
def registered(tmp_path, tracking_uri):
    """A small CNN (BatchNorm statistics moved off their defaults) saved as a checkpoint and
    logged + registered twice (champion moves to version 2) in a fresh SQLite store."""
    import mlflow
    from tasks.models import log_classifier

    torch.manual_seed(0)
    model = build_classifier("small_cnn", 1, 2, (32, 32), [0.4], [0.3])
    model.train()
    with torch.no_grad():
        model(torch.rand(64, 1, 32, 32))  # running stats differ from the init
    model.eval()
    meta = {"model_name": "small_cnn", "in_channels": 1, "num_classes": 2,
            "image_size": [32, 32], "norm": "batch", "dropout": 0.0, "dataset": "phantoms"}
    ckpt = save_classifier(tmp_path / "classifier.pt", model, meta)
    images = torch.rand(8, 1, 32, 32)
    mlflow.set_tracking_uri(tracking_uri)
    # artifacts under tmp_path (a fresh SQLite store's default experiment writes ./mlruns)
    experiment = mlflow.create_experiment("registry", artifact_location=(tmp_path / "art").as_uri())
    for _ in range(2):
        with mlflow.start_run(experiment_id=experiment):
            info = log_classifier(model, images, "phantoms", "small_cnn", alias="champion")
    return ckpt, info


def _checkpoint_logits(ckpt, x: np.ndarray) -> np.ndarray:
    model = load_classifier(ckpt)[0].cpu().eval()
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def test_pyfunc_load_predicts_checkpoint_logits(registered):
    import mlflow
    from mlflow import MlflowClient

    ckpt, info = registered
    version = MlflowClient().get_model_version_by_alias(NAME, "champion")
    assert int(version.version) == 2 and int(info.registered_model_version) == 2
    inputs = info.signature.inputs.to_dict()[0]["tensor-spec"]
    assert inputs["dtype"] == "float32" and list(inputs["shape"]) == [-1, 1, 32, 32]
    assert list(info.signature.outputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 2]
    x = np.random.default_rng(1).random((5, 1, 32, 32), dtype=np.float32)
    predicted = mlflow.pyfunc.load_model(f"models:/{NAME}@champion").predict(x)
    np.testing.assert_allclose(predicted, _checkpoint_logits(ckpt, x), rtol=1e-5, atol=1e-5)
    one = mlflow.pyfunc.load_model(f"models:/{NAME}/1").predict(x[:1])  # dynamic batch size
    np.testing.assert_allclose(one, _checkpoint_logits(ckpt, x[:1]), rtol=1e-5, atol=1e-5)


def test_models_serve_answers_checkpoint_logits(registered, tracking_uri, tmp_path):
    ckpt, _ = registered
    port = free_port()
    env = env_with(MLFLOW_TRACKING_URI=tracking_uri)  # venv bin first on PATH (uvicorn)
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{NAME}@champion",
         "--env-manager", "local", "--host", "127.0.0.1", "-p", str(port), "-w", "1"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
                assert time.time() < deadline, "mlflow models serve not ready in 180 s"
                time.sleep(0.5)
        x = np.random.default_rng(2).random((3, 1, 32, 32), dtype=np.float32)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", json.dumps({"inputs": x.tolist()}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            predictions = np.asarray(json.loads(response.read())["predictions"])
        np.testing.assert_allclose(predictions, _checkpoint_logits(ckpt, x), rtol=1e-5,
                                   atol=1e-5)
    finally:
        stop_group(proc, timeout=30)
        log.close()
