"""Own-data sources: formats, conversions and every bad input (a DataError naming the file,
or the documented handling), checked against PIL / nibabel as oracles."""

from __future__ import annotations

import os
import struct
import tracemalloc
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medsec.config import load_config
from medsec.data.prepare import prepare_dataset
from medsec.data.sources.readers import ReadSettings, load_image
from medsec.data.sources.records import Record, folder_records, manifest_records
from medsec.data.types import ImageDataset, TensorImageDataset
from medsec.errors import DataError
from medsec.stages.data import data_source
from tests.unit.own_data_fixtures import make_folder_dataset, make_manifest, manifest_dataset


def _record(root: Path, rel: str) -> Record:
    return Record(root, rel, ("a",), "p", "s")


def _load(root: Path, rel: str, **settings) -> np.ndarray:
    return load_image(_record(root, rel), ReadSettings(**{"image_size": 16, **settings}))


def test_png_8_and_16_bit_scale_by_their_type_maximum(tmp_path):
    Image.fromarray(np.full((16, 16), 128, np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.full((16, 16), 40000, np.uint16)).save(tmp_path / "b.png")
    assert np.allclose(_load(tmp_path, "a.png"), 128 / 255, atol=1e-6)
    assert np.allclose(_load(tmp_path, "b.png"), 40000 / 65535, atol=1e-6)


def test_alpha_is_dropped_and_rgb_to_grey_is_luma(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    rgba = np.concatenate([rgb, np.zeros((16, 16, 1), np.uint8)], axis=2)  # fully transparent
    Image.fromarray(rgba).save(tmp_path / "alpha.png")
    colour = _load(tmp_path, "alpha.png", channels=3)
    assert colour.shape == (3, 16, 16)
    np.testing.assert_allclose(colour, rgb.transpose(2, 0, 1) / 255, atol=1e-6)  # alpha ignored
    grey = _load(tmp_path, "alpha.png", channels=1)[0]
    pil_grey = np.asarray(Image.fromarray(rgb).convert("L"), np.float32) / 255  # ITU-R 601
    assert np.abs(grey - pil_grey).max() <= 1 / 255 + 1e-6


def test_jpeg_and_mixed_sizes_and_channels_are_converted(tmp_path):
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(tmp_path / "a.jpg")
    Image.fromarray(rng.integers(0, 256, (50, 50), dtype=np.uint8)).save(tmp_path / "b.png")
    for rel in ("a.jpg", "b.png"):
        for channels in (1, 3):
            image = _load(tmp_path, rel, image_size=28, channels=channels)
            assert image.shape == (channels, 28, 28) and image.dtype == np.float32
            assert 0.0 <= image.min() and image.max() <= 1.0


def test_nifti_is_reoriented_to_ras(tmp_path):
    rng = np.random.default_rng(2)
    volume = rng.random((12, 10, 5)).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "ras.nii.gz")
    las = np.diag([-1.0, 1.0, 1.0, 1.0])  # same anatomy stored with x flipped
    nib.save(nib.Nifti1Image(volume[::-1].copy(), las), tmp_path / "las.nii.gz")
    a = _load(tmp_path, "ras.nii.gz", image_size=12)
    b = _load(tmp_path, "las.nii.gz", image_size=12)
    # oracle: nibabel's canonical (RAS) orientation of the LAS file
    canonical = nib.as_closest_canonical(nib.load(tmp_path / "las.nii.gz")).get_fdata()
    np.testing.assert_allclose(canonical, volume, atol=1e-6)
    np.testing.assert_allclose(a, b, atol=1e-5)  # stored differently, read the same
    assert not np.allclose(volume[::-1], volume)  # (without reorientation they would differ)


def test_4d_nifti_and_nan_pixels_are_errors_naming_the_file(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 3, 2), np.float32), np.eye(4)), tmp_path / "t.nii")
    with pytest.raises(DataError, match=r"^t\.nii: 4-D NIfTI"):
        _load(tmp_path, "t.nii")
    bad = np.ones((8, 8, 1), np.float32)
    bad[2, 2, 0] = np.nan
    nib.save(nib.Nifti1Image(bad, np.eye(4)), tmp_path / "nan.nii")
    with pytest.raises(DataError, match=r"^nan\.nii: 1 NaN/inf"):
        _load(tmp_path, "nan.nii")


def test_truncated_png_is_an_error_naming_the_file(tmp_path):
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)).save(tmp_path / "t.png")
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"^t\.png: cannot decode.*truncated"):
        _load(tmp_path, "t.png")


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width x height grey pixels, with no real pixel data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def test_hostile_size_is_refused_from_the_header_before_decoding(tmp_path):
    _png_header_only(tmp_path / "huge.png", 12_000, 12_000)  # 144 Mpixel claimed
    tracemalloc.start()
    with pytest.raises(DataError, match=r"^huge\.png: 12000x12000 = 144000000 pixels exceeds "
                                        r"dataset.max_pixels 100000000"):
        _load(tmp_path, "huge.png", max_pixels=100_000_000)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20 * 2**20  # nothing near the 144 MB the pixels would take was allocated


def test_symlink_leaving_the_data_root_is_refused(tmp_path):
    make_folder_dataset(tmp_path / "raw", n_patients=1, per_patient=1, size=16)
    outside = tmp_path / "secret.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(outside)
    os.symlink(outside, tmp_path / "raw" / "normal" / "leak.png")
    with pytest.raises(DataError, match=r"normal/leak\.png: is a symlink leaving the data root"):
        folder_records(tmp_path / "raw")
    inside = tmp_path / "raw" / "lesion" / "lesion-patient00" / "0.png"
    os.unlink(tmp_path / "raw" / "normal" / "leak.png")
    os.symlink(inside, tmp_path / "raw" / "normal" / "ok.png")  # inside the root: allowed
    assert len(folder_records(tmp_path / "raw")) == 3


def test_manifest_missing_file_and_unknown_split_name_the_row(tmp_path):
    rows = manifest_dataset(tmp_path, n_patients=1, per_patient=1, size=16)
    make_manifest(tmp_path, [*rows, {"path": "img/gone.png", "label": "normal"}])
    with pytest.raises(DataError, match=r"manifest\.csv row 4: img/gone\.png: file not found"):
        manifest_records(tmp_path / "manifest.csv")
    make_manifest(tmp_path, [rows[0] | {"split": "holdout"}])
    with pytest.raises(DataError, match=r"row 2 \(img/p00_0\.png\): split 'holdout'"):
        manifest_records(tmp_path / "manifest.csv")


def _cfg(root: Path, *extra: str):
    return load_config(overrides=["dataset.source=manifest", "dataset.name=own",
                                  "dataset.path=manifest.csv", f"dataset.data_dir={root}",
                                  "dataset.image_size=16", *extra])


def test_string_labels_follow_the_class_list_and_unknown_labels_fail(tmp_path):
    rows = manifest_dataset(tmp_path, n_patients=3, per_patient=1, size=16)
    make_manifest(tmp_path, rows)
    data = prepare_dataset(data_source(_cfg(tmp_path, "dataset.classes=[normal,lesion]")),
                           tmp_path / "prepared")
    assert data.class_names == ["normal", "lesion"]
    # lesion images (a bright disc) got label 1, as the class list says
    for split in data.splits.values():
        bright = split.images.reshape(len(split), -1).max(1) > 0.9
        np.testing.assert_array_equal(split.labels, bright.astype(int))
    with pytest.raises(DataError, match=r"img/p00_0\.png: unknown label 'lesion'; "
                                        r"dataset.classes: normal, other"):
        prepare_dataset(data_source(_cfg(tmp_path, "dataset.classes=[normal,other]")),
                        tmp_path / "prepared2")


def test_too_few_patients_for_three_splits_is_an_error(tmp_path):
    rows = manifest_dataset(tmp_path, n_patients=1, per_patient=3, size=16)  # 2 patients
    make_manifest(tmp_path, rows)
    with pytest.raises(DataError, match="only 2 patient"):
        prepare_dataset(data_source(_cfg(tmp_path)), tmp_path / "prepared")
    fixed = [r | {"split": "train"} for r in rows]  # a manifest split leaving val/test empty
    make_manifest(tmp_path, fixed)
    with pytest.raises(DataError, match=r"empty split\(s\) val, test"):
        prepare_dataset(data_source(_cfg(tmp_path)), tmp_path / "prepared")


def test_several_labels_in_the_single_label_column_are_refused_clearly(tmp_path):
    # multi-label manifests use the 'labels' column (tests/unit/test_multilabel.py)
    rows = manifest_dataset(tmp_path, n_patients=2, per_patient=1, size=16)
    make_manifest(tmp_path, [{"path": r["path"], "label": "lesion|effusion",
                              "patient_id": r["patient_id"]} for r in rows])
    with pytest.raises(DataError, match=r"img/p00_0\.png: 2 labels in the 'label' column; "
                                        "several findings per image need the 'labels' column"):
        prepare_dataset(data_source(_cfg(tmp_path)), tmp_path / "prepared")


def test_over_the_memory_limit_images_are_streamed_from_a_memmap(tmp_path):
    rows = manifest_dataset(tmp_path, n_patients=4, per_patient=2, size=16)
    make_manifest(tmp_path, rows)
    small = prepare_dataset(data_source(_cfg(tmp_path)), tmp_path / "a")
    streamed = prepare_dataset(data_source(_cfg(tmp_path, "dataset.memory_limit_mb=0.001")),
                               tmp_path / "b")
    assert not isinstance(small.splits["train"].images, np.memmap)
    assert isinstance(streamed.splits["train"].images, np.memmap)
    assert streamed.extra["storage"] == "memmap" and small.version == streamed.version
    dataset = TensorImageDataset(streamed.splits["train"])
    image, label = dataset[1]
    np.testing.assert_array_equal(image.numpy(), small.splits["train"].images[1])
    assert int(label) == small.splits["train"].labels[1]
    train = streamed.splits["train"]  # a slice not at the start of the file streams too
    tail = TensorImageDataset(ImageDataset(train.images[3:], train.labels[3:]))
    assert tail.stream is not None
    np.testing.assert_array_equal(tail[1][0].numpy(), small.splits["train"].images[4])
    # sites and studies are carried as pseudonyms (never the raw MRN / accession / site)
    train = streamed.splits["train"]
    assert set(np.unique(train.site_ids)) <= {k for k in np.unique(train.site_ids)
                                              if k.startswith("T") and len(k) == 17}
    assert not any("MRN" in k or "ACC" in k for k in [*train.patient_ids, *train.study_ids])


def test_medmnist_plus_sizes_come_from_their_own_files(tmp_path, monkeypatch):
    from medsec.io import save_npz_deterministic

    rng = np.random.default_rng(4)
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = rng.integers(0, 256, (4, 64, 64), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(4) % 2).reshape(-1, 1).astype(np.uint8)
    save_npz_deterministic(tmp_path / "breastmnist_64.npz", arrays)
    monkeypatch.delenv("MEDSEC_DATA_DIR", raising=False)
    cfg = load_config(overrides=["dataset.name=breastmnist", f"dataset.data_dir={tmp_path}",
                                 "dataset.image_size=64"])
    data = prepare_dataset(data_source(cfg), tmp_path / "prepared")
    assert data.image_shape == (1, 64, 64) and data.extra["source"] == "breastmnist_64.npz"
    with pytest.raises(DataError, match="breastmnist_128.npz"):
        prepare_dataset(data_source(cfg.model_copy(update={"dataset": cfg.dataset.model_copy(
            update={"image_size": 128})})), tmp_path / "p2")


@pytest.mark.parametrize("size", [28, 64, 128, 224, 512])
def test_every_image_size_prepares_and_fits_the_classifier(tmp_path, size):
    import torch

    from medsec.models.factory import build_classifier

    rows = manifest_dataset(tmp_path, n_patients=2, per_patient=1, size=40)
    make_manifest(tmp_path, rows)
    cfg = load_config(overrides=["dataset.source=manifest", "dataset.name=own",
                                 "dataset.path=manifest.csv", f"dataset.data_dir={tmp_path}",
                                 f"dataset.image_size={size}", "dataset.channels=3"])
    data = prepare_dataset(data_source(cfg), tmp_path / "prepared")
    assert data.image_shape == (3, size, size)
    net = build_classifier("small_cnn", 3, 2, (size, size))
    batch = torch.from_numpy(np.ascontiguousarray(data.splits["train"].images[:2]))
    assert net(batch).shape == (len(batch), 2)


def test_a_folder_of_dicom_files_is_read_by_the_dicom_reader_and_tagged(tmp_path):
    from medsec.data.dicom import read_dicom
    from medsec.stages.data import data_source_tag
    from tests.dicom_factory import make_dataset, write

    rng = np.random.default_rng(5)
    for label in ("lesion", "normal"):
        for p in range(3):
            folder = tmp_path / "raw" / label / f"pt{p}"
            folder.mkdir(parents=True)
            stored = rng.integers(0, 4096, (24, 24)).astype(np.uint16)
            write(make_dataset(stored, bits_stored=12), folder / "1.dcm")
    cfg = load_config(overrides=["dataset.source=folder", "dataset.name=dcm", "dataset.path=raw",
                                 f"dataset.data_dir={tmp_path}", "dataset.image_size=24"])
    assert data_source_tag(cfg) == "dicom"
    data = prepare_dataset(data_source(cfg), tmp_path / "prepared")
    assert data.extra["data_source"] == "dicom"
    first = sorted((tmp_path / "raw").rglob("*.dcm"))[0]  # lesion/pt0/1.dcm
    expected = read_dicom(first, 10_000)[0]  # same size: no resize, the reader's own values
    found = [s.images[i, 0] for s in data.splits.values() for i in range(len(s))]
    assert any(np.allclose(image, expected, atol=1e-6) for image in found)


def test_prepared_key_ignores_mtimes_but_sees_changed_files_and_settings(tmp_path):
    make_folder_dataset(tmp_path / "raw", n_patients=3, per_patient=1, size=16)
    cfg = load_config(overrides=["dataset.source=folder", "dataset.name=own", "dataset.path=raw",
                                 f"dataset.data_dir={tmp_path}", "dataset.image_size=16"])
    key = data_source(cfg).key()
    first = sorted((tmp_path / "raw").rglob("*.png"))[0]
    os.utime(first, (1e9, 1e9))  # a fresh checkout: new times, same content -> still current
    assert data_source(cfg).key() == key
    first.write_bytes(first.read_bytes() + b"\0")  # a changed file -> prepared again
    changed = data_source(cfg).key()
    assert changed != key
    other = cfg.model_copy(update={"dataset": cfg.dataset.model_copy(update={"image_size": 32})})
    assert data_source(other).key() != changed
