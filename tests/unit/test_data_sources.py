import hashlib
import zipfile

import numpy as np
import pytest

from medsec.data.medmnist import MEDMNIST_2D, MedMNISTInfo
from medsec.data.phantoms import generate_phantom_arrays, write_phantoms
from medsec.data.registry import load_dataset
from medsec.errors import DataError
from medsec.io import file_digest


def _medmnist_arrays(n=6, size=8, classes=2, rng=None):
    rng = rng or np.random.default_rng(0)
    out = {}
    for split in ("train", "val", "test"):
        out[f"{split}_images"] = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        out[f"{split}_labels"] = rng.integers(0, classes, (n, 1), dtype=np.uint8)
    return out


def _write(tmp_path, name, arrays):
    path = tmp_path / f"{name}.npz"
    np.savez(path, **arrays)
    return path


def test_phantoms_are_deterministic_and_consistent(tmp_path):
    a = write_phantoms(tmp_path / "a.npz", 40, 10, 10, 32, 0)
    b = write_phantoms(tmp_path / "b.npz", 40, 10, 10, 32, 0)
    c = write_phantoms(tmp_path / "c.npz", 40, 10, 10, 32, 1)
    assert file_digest(a) == file_digest(b) != file_digest(c)
    arrays = generate_phantom_arrays(40, 10, 10, 32, 0)
    labels = arrays["train_labels"][:, 0]
    has_lesion = arrays["train_masks"].reshape(40, -1).max(1)
    np.testing.assert_array_equal(labels, has_lesion)  # label 1 <=> mask has a lesion
    # lesions are brighter than the tissue around them
    imgs, masks = arrays["train_images"].astype(float), arrays["train_masks"] > 0
    assert imgs[masks].mean() > imgs[~masks & (imgs > 0)].mean() + 50


def test_load_phantoms(phantom_dir):
    data = load_dataset("phantoms", phantom_dir)
    train = data.splits["train"]
    assert train.images.dtype == np.float32 and train.images.shape == (96, 1, 32, 32)
    assert 0.0 <= train.images.min() and train.images.max() <= 1.0
    assert train.labels.dtype == np.int64 and set(np.unique(train.labels)) == {0, 1}
    assert train.masks.shape == (96, 32, 32)
    assert data.synthetic and "synthetic" in data.verification


def test_real_pneumoniamnist_is_unverified_not_an_error(pneumonia_path):
    data = load_dataset("pneumoniamnist", pneumonia_path.parent)
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 4708, "val": 524, "test": 624}
    assert data.image_shape == (1, 28, 28)
    assert data.verification.startswith("unverified")
    assert data.version == file_digest(pneumonia_path)


def test_official_md5_gives_verified(tmp_path, monkeypatch):
    path = _write(tmp_path, "breastmnist", _medmnist_arrays())
    info = MEDMNIST_2D["breastmnist"]
    fake = MedMNISTInfo(info.n_channels, info.class_names, {8: file_digest(path)})
    monkeypatch.setitem(MEDMNIST_2D, "breastmnist", fake)
    assert load_dataset("breastmnist", tmp_path).verification == "verified"


def test_env_var_points_to_data_dir(tmp_path, monkeypatch):
    _write(tmp_path, "breastmnist", _medmnist_arrays())
    monkeypatch.setenv("MEDSEC_DATA_DIR", str(tmp_path))
    assert len(load_dataset("breastmnist", "does-not-exist").splits["train"]) == 6


def test_missing_file_says_where_to_put_it(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset("pneumoniamnist", tmp_path)
    message = str(info.value)
    assert str(tmp_path / "pneumoniamnist.npz") in message and "MEDSEC_DATA_DIR" in message
    with pytest.raises(DataError, match="medsec data init"):
        load_dataset("phantoms", tmp_path)


def test_truncated_file(tmp_path):
    path = _write(tmp_path, "breastmnist", _medmnist_arrays(n=50, size=28))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="breastmnist.npz.*corrupt or truncated"):
        load_dataset("breastmnist", tmp_path)


def test_garbage_file(tmp_path):
    (tmp_path / "breastmnist.npz").write_bytes(hashlib.sha256(b"x").digest() * 100)
    with pytest.raises(DataError, match="not a readable .npz"):
        load_dataset("breastmnist", tmp_path)


def _changed(array, index, value, dtype=None):
    out = array.astype(dtype or array.dtype) / (255 if dtype else 1)
    out[index] = value
    return out


@pytest.mark.parametrize(("change", "match"), [
    (lambda a: {"training_images": a.pop("train_images")}, "missing key.*train_images"),
    (lambda a: {"val_labels": _changed(a["val_labels"], 2, 7)}, r"val_labels.*\[0, 1\].*7"),
    (lambda a: {"test_images": _changed(a["test_images"], (3, 2, 2), np.nan, np.float32)},
     "test_images.*NaN"),
    (lambda a: {"train_images": np.zeros((6, 8, 8, 3), np.uint8)}, "3 channel"),
    (lambda a: {"val_images": np.zeros((6, 9, 9), np.uint8)}, "val_images.*shape"),
], ids=["keys", "label_range", "nan", "channels", "shape"])
def test_bad_file_is_named(tmp_path, change, match):
    arrays = _medmnist_arrays()
    _write(tmp_path, "breastmnist", arrays | change(arrays))
    with pytest.raises(DataError, match=match):
        load_dataset("breastmnist", tmp_path)


def test_multilabel_rejected(tmp_path):
    with pytest.raises(DataError, match="multi-label"):
        load_dataset("chestmnist", tmp_path)


def test_deterministic_npz_bytes(tmp_path):
    from medsec.io import save_npz_deterministic

    arrays = {"a": np.arange(10), "b": np.ones((2, 2), np.float32)}
    p1 = save_npz_deterministic(tmp_path / "1.npz", arrays)
    p2 = save_npz_deterministic(tmp_path / "2.npz", arrays)
    assert p1.read_bytes() == p2.read_bytes()
    with zipfile.ZipFile(p1) as zf:
        assert sorted(zf.namelist()) == ["a.npy", "b.npy"]
    with np.load(p1) as loaded:
        np.testing.assert_array_equal(loaded["a"], arrays["a"])
