"""Segmentation data, models, 3D volumes and bad input: fast tests (tiny sizes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from medsec.errors import ConfigError, DataError
from medsec.segmentation.attacks import SegPGD
from medsec.segmentation.config import SegAttackConfig, SegmentationConfig
from medsec.segmentation.data import (
    SegSplit,
    check_pair,
    load_segmentation_folder,
    phantom_volumes,
    read_image_mask_folder,
)
from medsec.segmentation.job import run_attack, train_segmenter
from medsec.segmentation.models import SEGMENTERS, build_segmenter, load_segmenter, save_segmenter


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.mark.parametrize("name", list(SEGMENTERS))
@pytest.mark.parametrize("dims", [2, 3])
def test_factory_shapes(name: str, dims: int) -> None:
    model = build_segmenter(name, dims, 1, 3, channels=(4, 8), mean=[0.3], std=[0.2]).eval()
    x = torch.rand(2, 1, *([16] * dims))
    assert model(x).shape == (2, 3, *([16] * dims))
    assert torch.allclose(model.normalize(x), (x - 0.3) / 0.2)


def test_factory_errors() -> None:
    with pytest.raises(ConfigError, match="unknown segmenter 'vnet'; known: unet"):
        build_segmenter("vnet")
    with pytest.raises(ConfigError, match="num_classes must be >= 2"):
        build_segmenter("unet", num_classes=1)


def test_phantom_volumes_deterministic() -> None:
    a, b = phantom_volumes(4, 2, 2, 16, seed=3), phantom_volumes(4, 2, 2, 16, seed=3)
    assert a.version == b.version and a.spatial_dims == 3
    train = a.splits["train"]
    assert train.images.shape == (4, 1, 16, 16, 16) and train.masks.shape == (4, 16, 16, 16)
    assert train.images.min() >= 0 and train.images.max() <= 1
    assert (train.masks.reshape(4, -1).max(1) == [0, 1, 0, 1]).all()


def test_3d_train_attack_metrics(tmp_path) -> None:
    cfg = SegmentationConfig(data="phantoms3d", volumes=(8, 4, 4), channels=(4, 8), epochs=2,
                             batch_size=4)
    data = phantom_volumes(*cfg.volumes, size=16)
    trained = train_segmenter(cfg, data)
    assert len(trained.fit.history) == 2 and "val_dice" in trained.fit.history[0]
    save_segmenter(tmp_path / "seg.pt", trained.model, trained.meta)
    loaded, meta = load_segmenter(tmp_path / "seg.pt")
    x = torch.from_numpy(data.splits["test"].images[:2])
    assert meta["spatial_dims"] == 3 and torch.equal(loaded(x), trained.model.eval()(x))
    test = data.splits["test"]
    for spec in (SegAttackConfig(name="pgd", steps=2),
                 SegAttackConfig(name="erase", kind="erase", steps=2, eps=16 / 255,
                                 region_margin=1)):
        result = run_attack(trained.model, spec, test, 4, 2)
        assert result.adversarial.shape[1:] == (1, 16, 16, 16)
        assert result.metrics["linf_max"] <= spec.eps + 1e-6
        assert 0.0 <= result.metrics["ssim_mean"] <= 1.0
        for key in ("dice_clean", "dice_adv", "l2_mean"):
            assert key in result.metrics


def _write_png_pair(root, name: str, image: np.ndarray, mask: np.ndarray) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(root / "images" / f"{name}.png")
    Image.fromarray(mask).save(root / "masks" / f"{name}.png")


def test_png_folder_roundtrip(tmp_path) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        for i in range(2):
            mask = np.zeros((16, 16), np.uint8)
            mask[4:8, 4:8] = 1
            _write_png_pair(tmp_path / split, f"case{i}", rng.integers(0, 256, (16, 16),
                                                                       dtype=np.uint8), mask)
    data = load_segmentation_folder(tmp_path)
    train = data.splits["train"]
    assert train.images.shape == (2, 1, 16, 16) and train.images.dtype == np.float32
    assert train.masks.shape == (2, 16, 16) and int(train.masks.sum()) == 32
    assert data.num_classes == 2


def test_nifti_folder(tmp_path) -> None:
    nib = pytest.importorskip("nibabel")
    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    image = np.random.default_rng(0).random((8, 8, 8)).astype(np.float32)
    mask = np.zeros((8, 8, 8), np.float32)
    mask[2:4, 2:4, 2:4] = 1
    nib.save(nib.Nifti1Image(image, np.eye(4)), tmp_path / "images" / "vol.nii.gz")
    nib.save(nib.Nifti1Image(mask, np.eye(4)), tmp_path / "masks" / "vol.nii.gz")
    split, names = read_image_mask_folder(tmp_path)
    assert names == ["vol"] and split.images.shape == (1, 1, 8, 8, 8)
    assert int(split.masks.sum()) == 8
    mask[0, 0, 0] = 0.5
    nib.save(nib.Nifti1Image(mask, np.eye(4)), tmp_path / "masks" / "vol.nii.gz")
    with pytest.raises(DataError, match="integer class indices"):
        read_image_mask_folder(tmp_path)


def test_folder_errors(tmp_path) -> None:
    img = np.zeros((16, 16), np.uint8)
    _write_png_pair(tmp_path, "a", img, img)
    Image.fromarray(img).save(tmp_path / "images" / "b.png")
    with pytest.raises(DataError, match=r"unpaired files: images without mask \['b'\]"):
        read_image_mask_folder(tmp_path)
    (tmp_path / "images" / "b.png").unlink()
    Image.fromarray(np.zeros((8, 16), np.uint8)).save(tmp_path / "masks" / "a.png")
    with pytest.raises(DataError, match=r"a.png / a.png: mask shape \(8, 16\) does not match"):
        read_image_mask_folder(tmp_path)
    with pytest.raises(DataError, match="needs images/ and masks/"):
        read_image_mask_folder(tmp_path / "missing")


def test_check_pair_errors() -> None:
    image = np.zeros((1, 4, 4), np.float32)
    with pytest.raises(DataError, match="does not match image spatial shape"):
        check_pair(image, np.zeros((4, 5)))
    with pytest.raises(DataError, match="integer class indices"):
        check_pair(image, np.full((4, 4), 0.3))
    with pytest.raises(DataError, match=">= 0"):
        check_pair(image, -np.ones((4, 4)))


class _Classifier(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x.mean((1, 2, 3)), -x.mean((1, 2, 3))], dim=1)


def test_attack_bad_input() -> None:
    x = torch.rand(2, 1, 16, 16)
    masks = torch.zeros(2, 16, 16, dtype=torch.long)
    with pytest.raises(ValueError, match="attacks segmentation models.*a classifier"):
        SegPGD(_Classifier(), steps=1)(x, masks)
    seg = build_segmenter("unet", 2, channels=(4, 8))
    with pytest.raises(ValueError, match=r"needs masks of shape \(2, 16, 16\)"):
        SegPGD(seg, steps=1)(x, torch.zeros(2, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        SegPGD(seg, steps=1)(x, masks.float() + 0.5)
    with pytest.raises(ValueError, match=r"mask values must lie in \[0, 2\)"):
        SegPGD(seg, steps=1)(x, masks + 3)
    with pytest.raises(ValueError, match="region must be a bool tensor"):
        SegPGD(seg, steps=1)(x, masks, region=torch.ones(2, 8, 8, dtype=torch.bool))


def test_config_errors() -> None:
    from medsec.config import config_from_dict

    with pytest.raises(ConfigError, match="segmentation.attacks.0.kind"):
        config_from_dict({"segmentation": {"attacks": [{"name": "a", "kind": "nope"}]}})
    with pytest.raises(ConfigError, match="attack names must be unique"):
        config_from_dict({"segmentation": {"attacks": [{"name": "a"}, {"name": "a"}]}})
    cfg = config_from_dict({"segmentation": {"attacks": [{"name": "a", "eps": "8/255"}]}})
    assert cfg.segmentation.attacks[0].eps == pytest.approx(8 / 255)
    bad = [({"attacks": [{"name": "a", "eps": "8/0"}]}, "segmentation.attacks.0.eps"),
           ({"attacks": [{"name": "a", "scale": 0}]}, "segmentation.attacks.0.scale"),
           ({"adversarial_training": {"eps": 2.0}}, "segmentation.adversarial_training.eps"),
           ({"adversarial_training": {"foo": 1}}, "segmentation.adversarial_training.foo"),
           ({"num_classes": 1}, "segmentation.num_classes")]
    for section, field in bad:
        with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
            config_from_dict({"segmentation": section})
    at = config_from_dict({"segmentation": {"adversarial_training": {"eps": "4/255"}}})
    assert at.segmentation.adversarial_training.step_size == pytest.approx(2.5 * 4 / 255 / 3)


def _png_folder(root, mask_value: int = 1) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        for i in range(4):
            mask = np.zeros((16, 16), np.uint8)
            if i % 2:
                mask[4:8, 4:8] = mask_value if (split, i) == ("val", 3) else 1
            _write_png_pair(root / split, f"case{i}", rng.integers(0, 256, (16, 16),
                                                                   dtype=np.uint8), mask)


def test_folder_validated_by_great_expectations(tmp_path) -> None:
    from medsec.data.validation import raise_if_failed
    from medsec.errors import ValidationFailed
    from medsec.segmentation.job import load_seg_data, validate_seg_data

    _png_folder(tmp_path / "good")
    cfg = SegmentationConfig(data="folder", folder=str(tmp_path / "good"), num_classes=2)
    report = validate_seg_data(load_seg_data(cfg), cfg)
    assert report.success, report.hard_failures
    names = {e["name"] for e in report.expectations}
    assert {"mask shape matches image", "mask values are integers"} <= names
    assert report.mask_stats["train"]["fraction_with_foreground"] == pytest.approx(0.5)
    assert report.dataset_name == "good"
    # a mask value outside the declared classes (2 with num_classes=2) is a hard failure
    # naming the split and the image; the same data with 3 classes passes
    _png_folder(tmp_path / "bad", mask_value=2)
    cfg_bad = SegmentationConfig(data="folder", folder=str(tmp_path / "bad"), num_classes=2)
    report = validate_seg_data(load_seg_data(cfg_bad), cfg_bad)
    assert not report.success
    assert any("val[3]" in f for f in report.hard_failures), report.hard_failures
    # file names (possible patient identifiers) stay out of the report logged to MLflow and
    # appear only in the error raised to the user
    assert not any("case3" in f for f in report.hard_failures)
    with pytest.raises(ValidationFailed, match=r"val\[3\] \(case3\)"):
        raise_if_failed(report, load_seg_data(cfg_bad).names)
    cfg_three = cfg_bad.model_copy(update={"num_classes": 3})
    assert validate_seg_data(load_seg_data(cfg_three), cfg_three).success
    # large lesions are a warning, not a failure
    cfg_small = cfg.model_copy(update={"max_foreground_fraction": 0.01})
    report = validate_seg_data(load_seg_data(cfg_small), cfg_small)
    assert report.success and any("foreground fraction" in w for w in report.warnings)


def test_3d_volumes_validated() -> None:
    from medsec.segmentation.job import validate_seg_data

    data = phantom_volumes(4, 2, 2, size=8)
    report = validate_seg_data(data, SegmentationConfig(data="phantoms3d"))
    assert report.success, report.hard_failures
    assert report.expected_shape == [1, 8, 8, 8]


def test_scorecard_rows_follow_config_and_mark_missing() -> None:
    from medsec.segmentation.scorecard import scorecard_markdown

    specs = [SegAttackConfig(name="b_pgd", eps=8 / 255, steps=10),
             SegAttackConfig(name="a_erase", kind="erase", eps=48 / 255, steps=30,
                             region_margin=2, scale=4),
             SegAttackConfig(name="l2", norm="l2", eps=0.5)]
    record = {"clean": {"test_dice": 0.95},
              "attacks": {"a_erase": {"dice_adv": 0.1, "target_success_rate": 0.8},
                          "b_pgd": {"dice_adv": 0.8, "dice_noise": float("nan")},
                          "l2": {"dice_adv": 0.7}, "extra": {"dice_adv": 0.5}},
              "defended": {"pgd_at": {"clean": {"test_dice": 0.9},
                                      "attacks": {"b_pgd": {"dice_adv": 0.85}}}}}
    card = scorecard_markdown(record, specs)
    rows = [line for line in card.splitlines() if line.startswith("| ") and "---" not in line
            and not line.startswith("| attack")]
    assert [r.split(" | ")[0] for r in rows] == ["| b_pgd", "| a_erase", "| l2", "| extra",
                                                 "| b_pgd"]
    assert rows[0].startswith("| b_pgd | PGD-10 L-inf 8/255 | 0.800 | - |")  # NaN -> '-'
    assert "PGD-30 L-inf 48/255, erase, lesion+2px, 4x4 blocks" in rows[1]
    assert "PGD-20 L2 0.5" in rows[2] and "| extra | - |" in rows[3]
    assert "## undefended: clean Dice 0.950" in card and "## pgd_at: clean Dice 0.900" in card


def test_targeted_attacks_need_suitable_test_images() -> None:
    model = build_segmenter("unet", 2, 1, 2, (4, 8)).eval()
    empty = SegSplit(np.random.default_rng(0).random((4, 1, 16, 16), dtype=np.float32),
                     np.zeros((4, 16, 16), np.int64))
    with pytest.raises(ConfigError, match="'e' \\(erase\\) needs test images with a lesion"):
        run_attack(model, SegAttackConfig(name="e", kind="erase", steps=1), empty, 4, 2)
    with pytest.raises(ConfigError, match="'i' \\(inject\\) needs .* 0 of 4 have one"):
        run_attack(model, SegAttackConfig(name="i", kind="inject", steps=1), empty, 4, 2)


def test_image_size_must_fit_the_unet_levels() -> None:
    from medsec.segmentation.data import SegData

    split = SegSplit(np.zeros((2, 1, 15, 15), np.float32), np.zeros((2, 15, 15), np.int64))
    data = SegData("odd", {"train": split, "val": split, "test": split}, 2, "v")
    with pytest.raises(ConfigError, match=r"divisible by 2; odd images are \(15, 15\)"):
        train_segmenter(SegmentationConfig(epochs=1, channels=(4, 8)), data)


def test_adversarial_set_loader_errors(tmp_path) -> None:
    import json

    from medsec.segmentation.dataset import FORMAT, load_seg_adversarial

    with pytest.raises(DataError, match="not found"):
        load_seg_adversarial(tmp_path / "nope.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="bad.npz: not a readable .npz"):
        load_seg_adversarial(tmp_path / "bad.npz")
    images = np.zeros((2, 1, 8, 8), np.float32)
    masks = np.zeros((2, 8, 8), np.int64)
    np.savez(tmp_path / "a.npz", test_images=images, test_masks=masks)
    with pytest.raises(DataError, match="missing array\\(s\\) target_masks, clean_indices"):
        load_seg_adversarial(tmp_path / "a.npz")
    np.savez(tmp_path / "a.npz", test_images=images, test_masks=masks[:, :4],
             target_masks=masks, clean_indices=np.arange(2))
    with pytest.raises(DataError, match="test_masks must be integer masks of shape"):
        load_seg_adversarial(tmp_path / "a.npz")
    np.savez(tmp_path / "a.npz", test_images=images + 2, test_masks=masks,
             target_masks=masks, clean_indices=np.arange(2))
    with pytest.raises(DataError, match="lie in \\[0, 1\\]"):
        load_seg_adversarial(tmp_path / "a.npz")
    np.savez(tmp_path / "a.npz", test_images=images, test_masks=masks,
             target_masks=masks, clean_indices=np.arange(2))
    with pytest.raises(DataError, match="metadata record a.json is missing"):
        load_seg_adversarial(tmp_path / "a.npz")
    (tmp_path / "a.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(DataError, match="is not 'medsec-adversarial-segmentation-v1'"):
        load_seg_adversarial(tmp_path / "a.npz")
    (tmp_path / "a.json").write_text(json.dumps({"format": FORMAT}))
    assert len(load_seg_adversarial(tmp_path / "a.npz")) == 2


def _nifti_pair(root, image, mask, image_affine, mask_affine=None, name: str = "vol") -> None:
    nib = pytest.importorskip("nibabel")
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(image, image_affine), root / "images" / f"{name}.nii.gz")
    nib.save(nib.Nifti1Image(mask, image_affine if mask_affine is None else mask_affine),
             root / "masks" / f"{name}.nii.gz")


def _asymmetric_volume() -> tuple[np.ndarray, np.ndarray]:
    """(image (6, 5, 4) float32 in [0, 1], mask (6, 5, 4) with a lesion off every mid-plane)."""
    image = np.random.default_rng(1).random((6, 5, 4)).astype(np.float32)
    mask = np.zeros((6, 5, 4), np.float32)
    mask[0:2, 3:5, 1:2] = 1
    return image, mask


def test_nifti_non_ras_affines_are_reoriented(tmp_path) -> None:
    """Found on the old code: a LAS volume (x flipped, negative x in the affine) loaded as
    stored, i.e. mirrored against the same anatomy saved RAS (Dice 0.01 between them). Each
    file is now reoriented to RAS (nibabel ``as_closest_canonical``), so the same anatomy in
    any orientation gives identical arrays, and image and mask stay aligned even when they
    were saved in different orientations."""
    image, mask = _asymmetric_volume()
    ras = np.diag([2.0, 2.0, 3.0, 1.0])
    las = ras.copy()
    las[0, 0], las[0, 3] = -2.0, 2.0 * (image.shape[0] - 1)  # same world coordinates
    # PIS: voxel axes (y, x, z) with y pointing posterior: a transposed, flipped store
    pis = np.zeros((4, 4))
    pis[1, 0], pis[0, 1], pis[2, 2], pis[3, 3] = -2.0, 2.0, 3.0, 1.0
    pis[1, 3] = 2.0 * (image.shape[1] - 1)

    def pis_of(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a.transpose(1, 0, 2)[::-1])

    _nifti_pair(tmp_path / "ras", image, mask, ras)
    _nifti_pair(tmp_path / "las", np.ascontiguousarray(image[::-1]),
                np.ascontiguousarray(mask[::-1]), las)
    _nifti_pair(tmp_path / "pis", pis_of(image), pis_of(mask), pis)
    # image stored LAS, mask stored RAS: the same anatomy
    _nifti_pair(tmp_path / "mixed", np.ascontiguousarray(image[::-1]), mask, las, ras)
    ref, _ = read_image_mask_folder(tmp_path / "ras")
    assert np.array_equal(ref.images[0, 0], image) and np.array_equal(ref.masks[0], mask)
    for case in ("las", "pis", "mixed"):
        got, _ = read_image_mask_folder(tmp_path / case)
        assert np.array_equal(got.images, ref.images), case
        assert np.array_equal(got.masks, ref.masks), case


def test_nifti_image_and_mask_in_different_spaces_rejected(tmp_path) -> None:
    image, mask = _asymmetric_volume()
    _nifti_pair(tmp_path, image, mask, np.diag([2.0, 2.0, 3.0, 1.0]), np.eye(4))
    with pytest.raises(DataError, match=r"vol\.nii\.gz / vol\.nii\.gz: .*affine"):
        read_image_mask_folder(tmp_path)


def test_nifti_4d_named_error(tmp_path) -> None:
    """A 4-D NIfTI (time series / multi-channel) is rejected naming the file; a trailing
    singleton 4th axis (X, Y, Z, 1) is squeezed."""
    image, mask = _asymmetric_volume()
    _nifti_pair(tmp_path / "single", image[..., None], mask[..., None], np.eye(4))
    split, _ = read_image_mask_folder(tmp_path / "single")
    assert split.images.shape == (1, 1, 6, 5, 4) and np.array_equal(split.masks[0], mask)
    _nifti_pair(tmp_path / "series", np.stack([image, image], -1), np.stack([mask, mask], -1),
                np.eye(4))
    with pytest.raises(DataError, match=r"vol\.nii\.gz: 4-D NIfTI of shape \(6, 5, 4, 2\)"):
        read_image_mask_folder(tmp_path / "series")


def _label_folder(root, values: dict[tuple[str, int], tuple[int, ...]]) -> None:
    """PNG folder, 2 pairs per split; ``values[(split, i)]`` are the mask's labels (default
    (0, 1)), painted in 4x4 blocks."""
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        for i in range(2):
            mask = np.zeros((16, 16), np.uint8)
            for k, v in enumerate(values.get((split, i), (0, 1))):
                mask[4 * k:4 * k + 4, 0:4] = v
            _write_png_pair(root / split, f"case{i}", rng.integers(0, 256, (16, 16),
                                                                   dtype=np.uint8), mask)


def test_binary_masks_stored_as_0_255_are_mapped(tmp_path, caplog) -> None:
    """Found on the old code: 0/255 masks gave a 256-class model (NaN metrics, FINISHED run).
    A binary {0, v} label set is now mapped to {0, 1} with a logged note."""
    everywhere = {(s, i): (0, 255) for s in ("train", "val", "test") for i in range(2)}
    everywhere[("test", 1)] = (0,)  # an empty mask stays empty
    _label_folder(tmp_path, everywhere)
    with caplog.at_level("WARNING", logger="medsec.segmentation.data"):
        data = load_segmentation_folder(tmp_path)
    assert data.num_classes == 2
    for name, split in data.splits.items():
        assert set(np.unique(split.masks)) <= {0, 1}, name
    assert int(data.splits["train"].masks.sum()) == 2 * 16
    assert int(data.splits["test"].masks[1].sum()) == 0
    assert any("255" in r.getMessage() and "0/1" in r.getMessage() for r in caplog.records)
    # a declared num_classes that already covers the value keeps the labels as they are
    from medsec.segmentation.job import load_seg_data

    cfg = SegmentationConfig(data="folder", folder=str(tmp_path), num_classes=256)
    assert int(load_seg_data(cfg).splits["train"].masks.max()) == 255


def test_unexpected_mask_labels_rejected(tmp_path) -> None:
    """Labels that are neither 0..K-1 nor a binary {0, v} set: one DataError naming a file
    holding the unexpected value and the values found (exit code 2 before any MLflow run)."""
    _label_folder(tmp_path, {("val", 1): (0, 1, 255)})
    with pytest.raises(DataError, match=r"case1\.png: mask values \[0, 1, 255\].*0\.\.1"):
        load_segmentation_folder(tmp_path)
    # contiguous multi-class labels load as they are (num_classes inferred)
    _label_folder(tmp_path / "three", {("val", 1): (0, 1, 2)})
    assert load_segmentation_folder(tmp_path / "three").num_classes == 3
