"""Robustness and image-quality metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from medsec.attacks import FGSM, PGD, OnePixel, Square
from medsec.attacks.base import Attack
from medsec.attacks.scoring import evaluate_attack, robustness_curve
from medsec.attacks.transfer import transfer_evaluate
from medsec.metrics.image_quality import (
    PSNR_MAX_DB,
    default_window,
    perturbation_norms,
    psnr,
    ssim,
)
from medsec.metrics.robustness import attack_metrics, robust_accuracy, robust_correct
from tests.unit.attack_fixtures import accuracy, single_thread, trained_model  # noqa: F401

EPS = 8 / 255
KEYS = {
    "n_examples",
    "clean_acc",
    "robust_acc",
    "attack_success_rate",
    "mean_l0",
    "max_l0",
    "mean_l2",
    "max_l2",
    "mean_linf",
    "max_linf",
    "mean_ssim",
    "mean_psnr",
    "n_perturbed",
    "mean_queries",
    "seconds_per_image",
}


@pytest.fixture(scope="module")
def setup():
    return trained_model(3)


def test_ssim_and_psnr_match_skimage() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 2, 28, 28, generator=g)
    y = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    ours_ssim, ours_psnr = ssim(x, y), psnr(x, y)
    for i in range(3):
        ref = structural_similarity(x[i].numpy(), y[i].numpy(), data_range=1.0, channel_axis=0)
        assert ours_ssim[i].item() == pytest.approx(float(ref), abs=1e-5)
        ref_psnr = peak_signal_noise_ratio(x[i].numpy(), y[i].numpy(), data_range=1.0)
        assert ours_psnr[i].item() == pytest.approx(float(ref_psnr), abs=1e-4)


def test_ssim_small_images_and_volumes() -> None:
    assert default_window((28, 28)) == 7 and default_window((6, 9)) == 5
    g = torch.Generator().manual_seed(1)
    vol = torch.rand(2, 1, 6, 10, 10, generator=g)
    noisy = (vol + 0.1 * torch.randn(vol.shape, generator=g)).clamp(0, 1)
    ref = structural_similarity(vol[0, 0].numpy(), noisy[0, 0].numpy(), data_range=1.0, win_size=5)
    assert ssim(vol, noisy)[0].item() == pytest.approx(float(ref), abs=1e-5)
    assert torch.allclose(ssim(vol, vol), torch.ones(2))
    assert torch.equal(psnr(vol, vol), torch.full((2,), PSNR_MAX_DB))


def test_perturbation_norms_count_pixel_locations() -> None:
    delta = torch.zeros(2, 3, 4, 4)
    delta[0, :, 1, 1] = 0.5  # one location, three channels
    delta[1, 0, 0, 0], delta[1, 2, 3, 3] = -0.25, 0.25
    norms = perturbation_norms(delta)
    assert norms["l0"].tolist() == [1.0, 2.0]
    assert norms["linf"].tolist() == [0.5, 0.25]
    assert norms["l2"][0].item() == pytest.approx(np.sqrt(3 * 0.25))


def test_evaluate_attack_consistent(setup) -> None:
    model, x, y = setup
    out = evaluate_attack(model, FGSM(model, eps=EPS), x, y, batch_size=24)
    assert set(out) == KEYS
    adv = FGSM(model, eps=EPS)(x, y)
    assert out["clean_acc"] == pytest.approx(accuracy(model, x, y))
    with torch.no_grad():
        correct = model(x).argmax(1) == y
        fooled = correct & (model(adv).argmax(1) != y)
    assert out["robust_acc"] == pytest.approx(float((correct & ~fooled).double().mean()))
    assert out["attack_success_rate"] == pytest.approx(float(fooled.sum() / correct.sum()))
    assert out["max_linf"] <= EPS + 1e-6 and out["mean_linf"] == pytest.approx(EPS, rel=1e-5)
    assert 0 < out["mean_ssim"] < 1 and 20 < out["mean_psnr"] < PSNR_MAX_DB
    assert out["mean_queries"] == 1.0  # one gradient pass (it also validates the output)
    assert out["n_examples"] == 64 and out["seconds_per_image"] > 0


def test_evaluate_black_box_and_l0(setup) -> None:
    model, x, y = setup
    sq = evaluate_attack(model, Square(model, eps=EPS, n_queries=30), x, y)
    assert 1 < sq["mean_queries"] <= 30
    op = evaluate_attack(model, OnePixel(model, pixels=2, population=8, steps=2), x[:8], y[:8])
    assert op["max_l0"] <= 2


def test_evaluate_targeted(setup) -> None:
    model, x, y = setup
    attack = PGD(model, eps=16 / 255, alpha=4 / 255, targeted=True)
    with pytest.raises(ValueError, match="needs `targets`"):
        evaluate_attack(model, attack, x, y)
    out = evaluate_attack(model, attack, x, y, targets=(y + 1) % 3)
    assert out["target_success_rate"] > 0.5


def test_robustness_curve_is_tidy(setup) -> None:
    model, x, y = setup
    eps_grid = [0.0, 4 / 255, 8 / 255, 16 / 255]
    rows = robustness_curve(
        model,
        x[:32],
        y[:32],
        attacks={"fgsm": {}, "pgd": {"alpha": lambda e: max(e, 1e-3) / 4, "steps": 5}},
        epsilons=eps_grid,
    )
    assert len(rows) == 8
    assert all({"attack", "epsilon"} | KEYS <= set(r) for r in rows)
    pgd = [r["robust_acc"] for r in rows if r["attack"] == "pgd"]
    assert all(a >= b for a, b in zip(pgd, pgd[1:], strict=False))
    assert [r["epsilon"] for r in rows if r["attack"] == "fgsm"] == eps_grid
    zero = rows[0]
    assert zero["robust_acc"] == zero["clean_acc"] and zero["n_perturbed"] == 0


def test_robust_accuracy_needs_clean_correctness() -> None:
    # oracle, by hand: example 1 is misclassified clean and the "attack" flips it to the
    # right class; example 3 survives one attack but not the other
    labels = torch.tensor([0, 1, 2, 0])
    clean = torch.tensor([0, 2, 2, 0])
    adv_a = torch.tensor([0, 1, 2, 0])
    adv_b = torch.tensor([0, 1, 1, 0])
    assert robust_correct(labels, clean, adv_a).tolist() == [True, False, True, True]
    assert robust_accuracy(labels, clean, adv_a) == 0.75
    assert robust_accuracy(labels, clean, adv_a, adv_b) == 0.5  # every attack
    assert robust_accuracy(labels.numpy(), clean.numpy(), adv_b.numpy()) == 0.5
    x = torch.zeros(4, 1, 4, 4)
    out = attack_metrics(x, x + 0.1, labels, clean, adv_a, torch.ones(4), 1.0)
    assert out["robust_acc"] == 0.75 and out["clean_acc"] == 0.75


def test_uap_robust_acc_counts_no_flipped_back_example() -> None:
    # a universal perturbation moves every image, so it also flips misclassified examples to
    # their label. Oracle by construction: the model says 1 iff mean brightness > 0.5 and the
    # attack adds 0.3 everywhere, so of 10 images with brightness 0.05..0.95 and labels
    # 1,0,1,0,... exactly those of brightness 0.25..0.45 labelled 0 are fooled and those
    # labelled 1 are flipped back; robust = correct before and after.
    x = torch.linspace(0.05, 0.95, 10)[:, None, None, None].expand(10, 1, 4, 4).contiguous()
    y = torch.arange(1, 11) % 2
    model = _Brightness()
    out = evaluate_attack(model, _Fixed(model, torch.full((1, 1, 4, 4), 0.3)), x, y)
    clean_ok = (x.mean((1, 2, 3)) > 0.5).long() == y
    adv_ok = ((x + 0.3).clamp(0, 1).mean((1, 2, 3)) > 0.5).long() == y
    assert out["clean_acc"] == pytest.approx(0.4) and float(adv_ok.double().mean()) == 0.5
    assert out["robust_acc"] == pytest.approx(float((clean_ok & adv_ok).double().mean()))
    assert out["robust_acc"] == pytest.approx(0.3)  # not 0.5, the old adv-only count
    moved = transfer_evaluate(_Fixed(model, torch.full((1, 1, 4, 4), 0.3)), model, x, y)
    assert moved["victim_robust_acc"] == moved["surrogate_robust_acc"] == pytest.approx(0.3)


class _Brightness(torch.nn.Module):
    """Two-class logits (N, 2): class 1 iff the mean pixel exceeds 0.5."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean((1, 2, 3))
        return torch.stack([torch.zeros_like(m), 10 * (m - 0.5)], 1)


class _Fixed(Attack):
    """Adds one fixed perturbation to every image (a UAP-style attack), clipped to [0, 1]."""

    def __init__(self, model: torch.nn.Module, delta: torch.Tensor) -> None:
        super().__init__(model, eps=None, norm="linf")
        self.delta = delta

    def _perturb(self, images, labels, clean_logits):
        return (images + self.delta).clamp(0, 1)
