"""Image-scaling attack: the downscaled attack image is the target, the large image still
looks like the source, and a resize-then-classify pipeline changes its prediction."""

from __future__ import annotations

import pytest
import torch

from medsec.attacks import ImageScalingAttack, ResizeThenClassify
from medsec.attacks.image_scaling import resize, scaling_matrix
from tests.unit.attack_fixtures import single_thread, trained_model  # noqa: F401


@pytest.fixture(scope="module")
def setup():
    model, x, y = trained_model(3)
    source = resize(x[y == 0][:4], 224, "bilinear").clamp(0, 1)  # large class-0 images
    target = x[y == 1][:4]  # small class-1 images
    return model, source, target


@pytest.mark.parametrize("mode", ["bilinear", "bicubic", "nearest", "area"])
def test_operator_matches_interpolate(mode: str) -> None:
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, 112, 96, generator=g, dtype=torch.float64)
    lh, lw = scaling_matrix(112, 28, mode), scaling_matrix(96, 28, mode)
    assert torch.allclose(lh @ img @ lw.T, resize(img, (28, 28), mode), atol=1e-10)


@pytest.mark.parametrize("mode", ["bilinear", "area"])
def test_scaling_attack_hides_the_target(mode: str, setup) -> None:
    model, source, target = setup
    result = ImageScalingAttack(size=28, mode=mode)(source, target)
    assert result.adv.shape == source.shape
    assert 0 <= result.adv.min() and result.adv.max() <= 1
    assert result.mse_target.max() < 1e-6  # downscaled attack image == target
    pipeline = ResizeThenClassify(model, 28, mode).eval()
    with torch.no_grad():
        assert (pipeline(source).argmax(1) == 0).all()
        assert (pipeline(result.adv).argmax(1) == 1).all()  # the prediction flips
    if mode == "bilinear":  # only 1/16 of the pixels matter: the big image barely changes
        assert result.ssim_source.min() > 0.8
    else:  # area scaling uses every pixel: the attack has to be visible (Quiring et al.)
        assert (
            result.delta_l2.mean()
            > 2 * ImageScalingAttack(28, "bilinear")(source, target).delta_l2.mean()
        )
    summary = result.as_dict()
    assert set(summary) == {
        "mean_delta_l2",
        "max_delta_linf",
        "mean_ssim_source",
        "mean_mse_target",
        "iterations",
    }


def test_box_constraint_is_handled() -> None:
    g = torch.Generator().manual_seed(1)
    source = (torch.rand(2, 1, 112, 112, generator=g) > 0.5).float()  # saturated pixels
    target = torch.rand(2, 1, 28, 28, generator=g)
    result = ImageScalingAttack(28, "bilinear", steps=2000, tol=1e-5)(source, target)
    assert 0 <= result.adv.min() and result.adv.max() <= 1
    assert result.mse_target.max() < 1e-8
    assert result.iterations > 1


def test_bad_inputs() -> None:
    attack = ImageScalingAttack(28)
    with pytest.raises(ValueError, match="target must be"):
        attack(torch.rand(1, 1, 112, 112), torch.rand(1, 1, 14, 14))
    with pytest.raises(ValueError, match="larger than the target"):
        attack(torch.rand(1, 1, 28, 28), torch.rand(1, 1, 28, 28))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        attack(torch.rand(1, 1, 112, 112) * 2, torch.rand(1, 1, 28, 28))
    with pytest.raises(ValueError, match="mode must be one of"):
        ImageScalingAttack(28, mode="lanczos")
