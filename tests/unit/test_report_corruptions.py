"""MedMNIST-C corruptions: the reference package's severity table, its definitions checked
against independent implementations (scipy, skimage, PIL formulas), accuracy bookkeeping; and
the validation-chosen operating point."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from sklearn.metrics import confusion_matrix, roc_curve

from medsec.metrics import corruptions as C
from medsec.metrics.threshold import operating_point, sens_spec, youden_threshold


def _reference_table() -> dict[str, list]:
    """``CORRUPTIONS_DS['pneumoniamnist']`` parsed from medmnistc's registry.py (the module
    itself does not import without OpenCV/Wand/torchvision)."""
    spec = importlib.util.find_spec("medmnistc")
    assert spec is not None, "medmnistc 0.1.0 must be installed (--no-deps)"
    path = Path(spec.origin).parent / "corruptions" / "registry.py"
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=False):
                if isinstance(key, ast.Constant) and key.value == "pneumoniamnist":
                    return {k.value: ast.literal_eval(v.keywords[0].value)
                            for k, v in zip(value.keys, value.values, strict=False)}
    raise AssertionError("pneumoniamnist not in medmnistc's registry")


def test_severity_table_is_medmnistc_pneumoniamnist():
    reference = _reference_table()
    ours = {s.name: list(s.params) for s in C.CHEST_XRAY}
    assert set(ours) == set(reference)
    for name, params in ours.items():
        assert params == list(reference[name])[:5], name


def _images(n: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.linspace(0.1, 0.9, 28)[None, None, :, None] * np.ones((n, 1, 28, 28))
    return np.clip(base + rng.normal(0, 0.05, base.shape), 0, 1).astype(np.float32)


@pytest.mark.parametrize("k", [3, 7, 11])
def test_gaussian_blur_matches_scipy(k):
    x = np.round(_images(1)[0, 0] * 255)
    sigma = 0.3 * ((k - 1) * 0.5 - 1) + 0.8
    expected = gaussian_filter(x, sigma, mode="mirror", truncate=((k - 1) / 2) / sigma)
    ours = C.gaussian_blur(C.Image.fromarray(x.astype(np.uint8)), k, None).astype(float)
    assert np.abs(ours - np.round(expected)).max() <= 1


def test_gamma_matches_the_power_law():
    x = np.arange(256, dtype=np.uint8).reshape(16, 16)
    out = C.gamma_correction(C.Image.fromarray(x), 1.6, None).astype(float)
    assert np.abs(out - 255 * (x / 255.0) ** 1.6).max() <= 1.0


def test_impulse_noise_is_salt_and_pepper_at_the_amount():
    x = np.full((100, 100), 128, dtype=np.uint8)
    out = C.impulse_noise(C.Image.fromarray(x), 0.02, np.random.default_rng(0))
    changed = out != 128
    assert 0.015 < changed.mean() < 0.025 and set(np.unique(out[changed])) <= {0, 255}


def test_damage_grows_with_severity_and_stays_in_range():
    images = _images()
    for spec in C.CHEST_XRAY:
        if spec.name.startswith(("brightness", "contrast", "gamma")):
            continue  # shifts whose |change| depends on the image, checked above/below
        damage = []
        for severity in range(1, 6):
            out = C.corrupt(images, spec, severity, seed=1)
            assert out.shape == images.shape and out.dtype == np.float32
            assert out.min() >= 0 and out.max() <= 1
            damage.append(float(np.abs(out - images).mean()))
        assert damage[-1] > damage[0], (spec.name, damage)
    up = C.corrupt(images, C.CHEST_XRAY[7], 5)  # brightness x1.5
    assert up.mean() > images.mean() * 1.3
    with pytest.raises(ValueError, match="severity 6"):
        C.corrupt(images, C.CHEST_XRAY[0], 6)


def test_corruption_accuracy_bookkeeping():
    images, labels = _images(8), np.array([0, 0, 0, 1, 1, 1, 1, 1])

    def constant(x: torch.Tensor) -> torch.Tensor:  # always class 1: accuracy 5/8 everywhere
        return torch.tensor([[0.0, 1.0]]).repeat(len(x), 1)

    out = C.corruption_accuracy(constant, images, labels)
    per = {k: v for k, v in out.items() if k.endswith("_acc") and k.count("_s")}
    assert len(per) == 13 * 5
    assert out["corruption_acc_mean"] == out["corruption_acc_worst"] == pytest.approx(5 / 8)


def test_youden_threshold_and_sens_spec_match_sklearn():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    scores = np.clip(labels * 0.3 + rng.normal(0.35, 0.2, 400), 0, 1)
    threshold = youden_threshold(scores, labels)
    fpr, tpr, thr = roc_curve(labels, scores)
    assert threshold == pytest.approx(thr[np.argmax(tpr - fpr)])
    sens, spec = sens_spec(scores, labels, threshold)
    tn, fp, fn, tp = confusion_matrix(labels, scores >= threshold).ravel()
    assert (sens, spec) == (pytest.approx(tp / (tp + fn)), pytest.approx(tn / (tn + fp)))
    point = operating_point(scores, labels, scores[::-1], labels[::-1])
    assert point["val_threshold"] == threshold
    with pytest.raises(ValueError, match="both classes"):
        youden_threshold(scores, np.zeros(400))
