import numpy as np
import pytest
import torch
from torch import nn

from medsec.config import load_config
from medsec.data.registry import load_dataset
from medsec.errors import ConfigError, DataError
from medsec.models.factory import MODELS, Normalize, build_classifier
from medsec.stages.classifier import train as train_classifier
from medsec.training.checkpoint import load_classifier, save_classifier
from medsec.training.job import evaluate_classifier


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_maps_pixels_to_logits(name):
    size = 64 if name == "densenet121" else 28
    model = build_classifier(name, 1, 3, (size, size), norm="group")
    assert isinstance(model.normalize, Normalize)  # normalisation is the first layer
    out = model(torch.rand(2, 1, size, size))
    assert out.shape == (2, 3)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def test_model_errors():
    with pytest.raises(ConfigError, match="unknown model 'vgg'"):
        build_classifier("vgg", 1, 2, (28, 28))
    with pytest.raises(ConfigError, match="densenet121.*28x28"):
        build_classifier("densenet121", 1, 2, (28, 28))


def _tiny_cfg(phantom_dir, **extra):
    overrides = [f"dataset.data_dir={phantom_dir}", "train.epochs=8", "train.batch_size=16",
                 "train.lr=0.003"]
    overrides += [f"{k}={v}" for k, v in extra.items()]
    return load_config(overrides=overrides)


def test_training_learns_phantoms_and_is_deterministic(phantom_dir):
    cfg = _tiny_cfg(phantom_dir)
    data = load_dataset("phantoms", phantom_dir)
    first = train_classifier(cfg, data)
    metrics = evaluate_classifier(first.model, data.splits["test"], 2).metrics
    assert metrics["test_acc"] >= 0.8, metrics
    assert metrics["test_auc"] >= 0.9, metrics
    assert len(first.fit.history) == 8
    second = train_classifier(cfg, data)
    again = evaluate_classifier(second.model, data.splits["test"], 2).metrics
    assert again == metrics  # same config and data -> identical test metrics


def test_checkpoint_roundtrip_and_corruption(tmp_path, phantom_dir):
    cfg = _tiny_cfg(phantom_dir, **{"train.epochs": 1})
    data = load_dataset("phantoms", phantom_dir)
    trained = train_classifier(cfg, data)
    path = save_classifier(tmp_path / "m.pt", trained.model, trained.meta)
    model, meta = load_classifier(path)
    x = torch.from_numpy(data.splits["test"].images[:8])
    with torch.no_grad():
        np.testing.assert_allclose(model(x).numpy(), trained.model(x).numpy(), atol=1e-6)
    assert meta["data_version"] == data.version
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match="not a readable MedSec checkpoint"):
        load_classifier(path)
    with pytest.raises(DataError, match="checkpoint not found"):
        load_classifier(tmp_path / "missing.pt")


def test_checkpoint_refuses_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "meta": Evil()}, path)
    with pytest.raises(DataError):
        load_classifier(path)
