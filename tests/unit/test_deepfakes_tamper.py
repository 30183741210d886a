"""Tampering: regions, the untouched-outside invariant, flips of a tiny victim, bad input."""

from __future__ import annotations

import pytest
import torch

from medsec.config import load_config
from medsec.data.registry import load_dataset
from medsec.deepfakes.classify import fit_on
from medsec.deepfakes.config import TamperConfig
from medsec.deepfakes.regions import box_mask, central_boxes, check_regions, lesion_regions
from medsec.deepfakes.tamper import (
    Inpainter,
    region_policy,
    tamper,
    tamper_metrics,
    tamper_split,
    train_inpainter,
)
from medsec.metrics.image_quality import total_variation
from medsec.stages.deepfake import recipe
from tests.unit.deepfake_fixtures import blob_dataset, single_thread  # noqa: F401


def test_box_outside_the_image_is_a_clear_error():
    assert box_mask((8, 8), 2, 3, 4, 5).sum() == 20
    with pytest.raises(ValueError, match=r"outside the 8x8 image"):
        box_mask((8, 8), 6, 0, 4, 4)
    with pytest.raises(ValueError, match="outside"):
        box_mask((8, 8), -1, 0, 2, 2)
    with pytest.raises(ValueError, match="size 0x2"):
        box_mask((8, 8), 0, 0, 0, 2)


def test_bad_regions_and_targets_are_rejected():
    net = Inpainter((1, 16, 16), 2, (8, 16))
    images = torch.rand(2, 1, 16, 16)
    good = torch.stack([box_mask((16, 16), 0, 0, 4, 4)] * 2)
    with pytest.raises(ValueError, match=r"shape \(N, H, W\) = \(2, 16, 16\)"):
        tamper(net, images, good[:, :8], torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"image\(s\) \[1\] is empty"):
        tamper(net, images, torch.stack([good[0], torch.zeros(16, 16, dtype=torch.bool)]),
               torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="binary"):
        check_regions(good.float() * 2, images)
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 1\]"):
        tamper(net, images, good, torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="images must have shape"):
        tamper(net, torch.rand(2, 1, 28, 28), good, torch.tensor([0, 1]))


def test_pixels_outside_the_region_are_bit_for_bit_unchanged():
    torch.manual_seed(0)
    net = Inpainter((1, 16, 16), 2, (8, 16))  # untrained: paints noise inside
    images = torch.rand(6, 1, 16, 16)
    regions = central_boxes(6, (16, 16), 0.4, torch.Generator().manual_seed(0))
    out = tamper(net, images, regions, torch.tensor([0, 1, 0, 1, 0, 1]))
    outside = ~regions.unsqueeze(1)
    assert torch.equal(out[outside], images[outside])
    assert not torch.equal(out[~outside], images[~outside])
    assert out.min() >= 0 and out.max() <= 1


def test_lesion_regions_and_policy_follow_the_masks():
    data = blob_dataset(8)
    regions = lesion_regions(torch.from_numpy(data.masks), pixels=1)
    assert regions[0].sum() == 0 and regions[1].sum() == 36  # 4x4 blob dilated to 6x6
    policy = region_policy(TamperConfig(), data)
    assert policy.mode == "lesion" and len(policy.pool) == 4
    filled = policy.regions(regions, torch.Generator().manual_seed(0))
    assert filled.flatten(1).any(1).all()  # lesion-free images borrow a lesion region
    with pytest.raises(ValueError, match="needs a dataset with lesion masks"):
        region_policy(TamperConfig(region="lesion"), blob_dataset(8).head(8).__class__(
            data.images, data.labels, None))


def test_tampering_flips_a_tiny_victim(phantom_dir):
    cfg = recipe(load_config(preset="tiny", overrides=[f"dataset.data_dir={phantom_dir}",
                                                       "train.epochs=10", "train.lr=0.003"]))
    data = load_dataset("phantoms", phantom_dir)
    train, val, test = (data.splits[s] for s in ("train", "val", "test"))
    victim = fit_on(cfg, train, val, data.class_names, "victim", seed=0)
    surrogate = fit_on(cfg, train, val, data.class_names, "surrogate", seed=1)
    tcfg = TamperConfig(epochs=15, batch_size=32, channels=(8, 16, 32), evidence_weight=1.0)
    trained = train_inpainter(train, 2, tcfg, surrogate, seed=0)
    result = tamper_split(trained, test, tcfg.dilate, 48, seed=0)
    metrics = tamper_metrics(victim, result, 2)
    assert metrics["tamper_n_eligible"] > 36  # the victim works: > 75 % correct
    assert metrics["tamper_flip_rate"] > 0.2, metrics  # measured: 0.88
    assert metrics["tamper_ssim_outside"] == 1.0 and metrics["tamper_max_change_outside"] == 0.0
    assert metrics["tamper_ssim"] < 1.0
    assert torch.equal(result.targets, 1 - result.labels)


def test_total_variation_prefers_smooth_blended_edits():
    region = box_mask((16, 16), 4, 4, 8, 8).view(1, 1, 16, 16)
    smooth = 0.2 * region.float()
    board = (torch.arange(16).view(16, 1) + torch.arange(16).view(1, 16)) % 2
    checker = 0.2 * region.float() * board
    zero, smooth_tv, checker_tv = (total_variation(x, per_image=True).item()
                                   for x in (torch.zeros(1, 1, 16, 16), smooth, checker))
    assert zero == 0.0 and smooth_tv == pytest.approx(0.2 * 32)  # the seam only
    assert checker_tv > 3 * smooth_tv
    assert total_variation(smooth).item() == pytest.approx(0.2 * 32 / (15 * 16))  # batch mean
