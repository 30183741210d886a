"""Gradient inversion of a federated client update (Inverting Gradients): a single image is
reconstructed far above the random-image baseline, client DP noise destroys it, SecAgg+ is
attacked on the sum only, CKKS is labelled not applicable; scores are MONAI's PSNR/SSIM."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from medsec.models.factory import build_classifier
from medsec.privacy.gradient_inversion import (
    CKKS_REASON,
    batch_gradient,
    dp_gradient,
    image_scores,
    inversion_metrics,
    match,
    recover_label,
    run_gradient_inversion,
    write_inversion_report,
)
from medsec.privacy.leakage_config import GradientInversionConfig
from tests.unit.federated_fixtures import tiny_dataset

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return build_classifier("small_cnn", 1, 2, (16, 16))  # the federated default network


@pytest.fixture(scope="module")
def rows(net):
    torch.set_num_threads(1)
    x, y = tiny_dataset(32, 8).splits["train"].tensors()
    settings = GradientInversionConfig(batch_sizes=(1,), steps=150, secagg_clients=2)
    return {r.setting: r for r in run_gradient_inversion(net, x, y, settings)}


def test_single_image_is_reconstructed_far_above_the_random_baseline(rows):
    plain = rows["plain"]
    assert plain.label_correct is True  # iDLG label recovery
    assert plain.psnr > plain.psnr_random + 10  # ~28 dB vs ~8.5 dB for a random image
    assert plain.ssim > 0.8 and abs(plain.ssim_random) < 0.1


def test_client_dp_noise_lowers_psnr_to_the_baseline(rows):
    dp, plain = rows["client_dp"], rows["plain"]
    assert dp.psnr < plain.psnr - 10
    assert dp.psnr < dp.psnr_random + 3


def test_secagg_is_attacked_on_the_sum_and_ckks_is_not_applicable(rows):
    sec = rows["secaggplus"]
    assert "SUM of 2 clients" in sec.note and sec.originals.shape[0] == 2
    assert sec.psnr is not None and sec.psnr < rows["plain"].psnr
    ckks = rows["ckks"]
    assert not ckks.applicable and ckks.psnr is None and ckks.ssim is None
    assert ckks.note == CKKS_REASON and ckks.note.startswith("not applicable")
    metrics = inversion_metrics(list(rows.values()))
    assert not any("ckks" in k for k in metrics)
    assert metrics["gradinv_psnr"] == rows["plain"].psnr
    assert set(metrics) >= {"gradinv_psnr_client_dp_b1", "gradinv_ssim_secaggplus_b1"}


def test_report_json_and_figure(rows, tmp_path):
    import matplotlib.image

    table, png = write_inversion_report(list(rows.values()), tmp_path)
    data = json.loads(table.read_text())
    ckks = next(r for r in data["rows"] if r["setting"] == "ckks")
    assert ckks["psnr"] is None and ckks["applicable"] is False
    image = matplotlib.image.imread(png)
    assert image.ndim == 3 and image.shape[0] > 100


def test_monai_scores_against_closed_form():
    """PSNR of a constant offset 0.1 is 20 dB; identical images have SSIM 1."""
    x = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 0.8
    psnr, ssim = image_scores((x + 0.1).clamp(0, 1), x)
    assert np.allclose(psnr, 20.0, atol=1e-3)
    assert np.allclose(image_scores(x, x)[1], 1.0, atol=1e-5)
    assert ssim.shape == (3,)


def test_matching_recovers_a_permutation():
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    perm = torch.tensor([3, 0, 4, 1, 2])
    recon = x[perm] + 0.01
    assert (perm[match(recon, x)] == torch.arange(5)).all()


def test_label_recovery_and_dp_gradient(net):
    x, y = tiny_dataset(8, 8).splits["train"].tensors()
    for i in range(4):
        assert recover_label(batch_gradient(net, x[i:i + 1], y[i:i + 1]), 2) == int(y[i])
    # without noise the DP gradient is the mean of per-example gradients clipped to C
    gen = torch.Generator().manual_seed(0)
    clipped = dp_gradient(net, x[:2], y[:2], 1e-3, 0.0, gen)
    norm = math.sqrt(sum(float((g ** 2).sum()) for g in clipped))
    assert norm <= 1e-3 + 1e-9
    with pytest.raises(ValueError, match="no output layer"):
        recover_label([torch.zeros(3, 3)], 2)


def test_federated_stage_runs_the_configured_attack():
    """``federated.gradient_inversion`` drives the stage function (CKKS row included)."""
    from medsec.config import load_config
    from medsec.stages.federated import gradient_inversion

    cfg = load_config(preset="tiny", overrides=[
        "federated.gradient_inversion.enabled=true", "federated.gradient_inversion.steps=5",
        "federated.gradient_inversion.batch_sizes=[2]",
        "federated.gradient_inversion.settings=[plain,ckks]"])
    rows = gradient_inversion(cfg, tiny_dataset(32, 8))
    assert [(r.setting, r.batch_size, r.applicable) for r in rows] == [
        ("plain", 2, True), ("ckks", 2, False)]
    assert rows[0].reconstructions.shape == (2, 1, 16, 16)
