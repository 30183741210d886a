"""Segmentation on the 2D phantoms: clean Dice, untargeted PGD, erase/inject, invariants.

One UNet is trained once per module (default UNet, channels 16-32, 30 epochs, 96 phantoms).
The phantom lesions are 0.35-0.55 brighter than tissue with noise sigma 0.03, so an 8/255
budget moves the Dice only moderately (see the printed figures); erasing needs ~48/255.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medsec.data.phantoms import generate_phantom_arrays
from medsec.segmentation.attacks import SegFGSM, SegPGD, dilate_region
from medsec.segmentation.config import SegAttackConfig, SegmentationConfig
from medsec.segmentation.data import SegData, SegSplit
from medsec.segmentation.job import evaluate_segmenter, run_attack, train_segmenter
from medsec.segmentation.metrics import segmentation_metrics
from medsec.segmentation.module import predict_masks


def _phantoms() -> SegData:
    arrays = generate_phantom_arrays(96, 48, 48, 32, 0)
    splits = {s: SegSplit(arrays[f"{s}_images"][:, None].astype(np.float32) / 255,
                          arrays[f"{s}_masks"].astype(np.int64)) for s in ("train", "val", "test")}
    return SegData("phantoms", splits, 2, "test")


@pytest.fixture(scope="module")
def trained():
    torch.set_num_threads(1)
    data = _phantoms()
    model = train_segmenter(SegmentationConfig(epochs=30), data).model
    return model, data


def test_clean_dice_and_pgd_drop(trained) -> None:
    model, data = trained
    clean = evaluate_segmenter(model, data.splits["test"], 2)
    assert clean["test_dice"] >= 0.9, clean
    result = run_attack(model, SegAttackConfig(name="pgd", steps=10), data.splits["test"], 48, 2)
    m = result.metrics
    print(f"clean dice {clean['test_dice']:.3f}; PGD linf 8/255 dice {m['dice_adv']:.3f}; "
          f"random sign noise of the same norm {m['dice_noise']:.3f}")
    assert m["dice_clean"] == pytest.approx(clean["test_dice"], abs=0.03)  # first 48 = whole
    assert m["dice_adv"] <= m["dice_clean"] - 0.08
    # the drop is the attack's doing: noise at the same L-inf budget (every pixel at +-eps)
    # costs at most a third of it
    assert m["dice_clean"] - m["dice_adv"] >= 3 * max(m["dice_clean"] - m["dice_noise"], 0.0)
    assert m["linf_max"] <= 8 / 255 + 1e-6


def test_erase_and_inject(trained) -> None:
    model, data = trained
    test = data.splits["test"]
    erase = run_attack(model, SegAttackConfig(name="erase", kind="erase", eps=48 / 255, steps=30),
                       test, 16, 2)
    m = erase.metrics
    print(f"erase: success {m['target_success_rate']:.2f}, erased {m['erased_fraction']:.2f}")
    assert m["target_success_rate"] >= 0.75 and m["erased_fraction"] >= 0.75
    inject = run_attack(model, SegAttackConfig(name="inject", kind="inject", eps=32 / 255,
                                               steps=30), test, 16, 2)
    print(f"inject: target dice {inject.metrics['target_dice']:.2f}, "
          f"forged {inject.metrics['forged_fraction']:.2f}")
    assert inject.metrics["forged_fraction"] >= 0.75


def test_invariants_budget_range_model_region(trained) -> None:
    model, data = trained
    x = torch.from_numpy(data.splits["test"].images[:8])
    y = torch.from_numpy(data.splits["test"].masks[:8])
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    region = dilate_region(y, 1)
    cases = [(SegPGD(model, eps=8 / 255, steps=3), "linf", 8 / 255),
             (SegPGD(model, eps=0.5, alpha=0.2, norm="l2", steps=3), "l2", 0.5),
             (SegFGSM(model, eps=8 / 255), "linf", 8 / 255),
             (SegPGD(model, eps=16 / 255, steps=3, targeted=True), "linf", 16 / 255),
             (SegPGD(model, eps=16 / 255, steps=3, scale=4), "linf", 16 / 255),
             (SegPGD(model, eps=1.0, alpha=0.3, norm="l2", steps=3, scale=2), "l2", 1.0)]
    for attack, norm, eps in cases:
        target = torch.zeros_like(y) if attack.targeted else y
        for reg in (None, region):
            adv = attack(x, target, region=reg)
            delta = (adv - x).flatten(1)
            size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
            assert float(size.max()) <= eps + 1e-6
            assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
            if reg is not None:
                assert float((adv - x)[~reg.unsqueeze(1)].abs().max()) == 0.0
                assert float((adv - x)[reg.unsqueeze(1)].abs().max()) > 0.0
    assert model.training  # flags restored
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    model.eval()


def test_metrics_per_class() -> None:
    t = torch.zeros(2, 16, 16, dtype=torch.long)
    t[0, 2:6, 2:6] = 1
    m = segmentation_metrics(t.clone(), t, 2)
    assert m["dice_lesion"] == pytest.approx(1.0) and m["iou_lesion"] == pytest.approx(1.0)
    assert m["hd95_lesion"] == pytest.approx(0.0)
    p = t.clone()
    p[0, 2:4] = 0
    assert segmentation_metrics(p, t, 2)["dice_lesion"] == pytest.approx(2 * 8 / (8 + 16))


def test_predict_masks_shape(trained) -> None:
    model, data = trained
    pred = predict_masks(model, torch.from_numpy(data.splits["test"].images[:3]))
    assert pred.shape == (3, 32, 32) and pred.dtype == torch.int64


def test_adversarial_training_helps_at_larger_budgets(trained) -> None:
    """PGD adversarial training of a segmenter (the classifiers' AdversarialBatches with the
    dense SegPGD) keeps more Dice under PGD at 16/255 than the undefended UNet, at a cost in
    clean Dice; its training batches stay inside the budget with the masks unchanged."""
    from medsec.defenses.training import AdversarialBatches
    from medsec.segmentation.attacks import SegPGD
    from medsec.segmentation.config import SegAdversarialTraining

    model, data = trained
    test = data.splits["test"]
    batches = AdversarialBatches(8 / 255, 4 / 255, 2, attack_cls=SegPGD)
    x = torch.from_numpy(test.images[:8])
    y = torch.from_numpy(test.masks[:8])
    x_adv, y_adv = batches(model, x, y)
    assert torch.equal(y_adv, y) and (x_adv - x).abs().max() <= 8 / 255 + 1e-6
    defended = train_segmenter(SegmentationConfig(epochs=30), data,
                               adversarial=SegAdversarialTraining(eps=8 / 255, steps=2)).model
    pgd16 = SegAttackConfig(name="pgd16", eps=16 / 255, steps=10)
    plain_m = run_attack(model, pgd16, test, 48, 2).metrics
    def_m = run_attack(defended, pgd16, test, 48, 2).metrics
    print(f"PGD 16/255 dice: undefended {plain_m['dice_clean']:.3f} -> {plain_m['dice_adv']:.3f}; "
          f"PGD-AT {def_m['dice_clean']:.3f} -> {def_m['dice_adv']:.3f}")
    assert def_m["dice_adv"] >= plain_m["dice_adv"] + 0.05
    assert def_m["dice_clean"] <= plain_m["dice_clean"]  # robustness is not free


def test_coarse_scale_perturbation_is_block_constant(trained) -> None:
    """The multi-scale variant: with ``scale=4`` the perturbation takes one value per 4x4
    block (exactly, on images the [0, 1] clip cannot cut: pixels in [0.25, 0.75]), stays in
    budget, lowers Dice more than coarse noise of the same budget on the phantoms, and a scale
    that does not divide the image is refused."""
    model, data = trained
    test = data.splits["test"]
    x = torch.from_numpy(test.images[:8]) * 0.5 + 0.25
    y = torch.from_numpy(test.masks[:8])
    for norm, eps in (("linf", 16 / 255), ("l2", 1.0)):
        delta = SegPGD(model, eps=eps, alpha=eps / 4, steps=5, norm=norm, scale=4)(x, y) - x
        blocks = delta.unfold(2, 4, 4).unfold(3, 4, 4)  # (N, C, 8, 8, 4, 4)
        assert float((blocks.amax((-1, -2)) - blocks.amin((-1, -2))).max()) < 1e-6, norm
        assert float(delta.abs().max()) > 0
        size = delta.flatten(1).abs().amax(1) if norm == "linf" else delta.flatten(1).norm(dim=1)
        assert float(size.max()) <= eps + 1e-5
    m = run_attack(model, SegAttackConfig(name="coarse", eps=16 / 255, steps=10, scale=4),
                   test, 48, 2).metrics
    print(f"coarse (4x4) PGD 16/255: dice {m['dice_clean']:.3f} -> {m['dice_adv']:.3f} "
          f"(coarse noise {m['dice_noise']:.3f})")
    assert m["dice_adv"] <= m["dice_noise"] - 0.03
    with pytest.raises(ValueError, match="scale 5 must divide the image size"):
        SegPGD(model, eps=8 / 255, steps=1, scale=5)(x[:2], y[:2])
    with pytest.raises(ValueError, match="scale must be an integer >= 1"):
        SegPGD(model, scale=0)


def test_saved_set_reloads_and_transfer_on_the_source_reproduces_the_attack(trained,
                                                                             tmp_path) -> None:
    """Oracle for transfer scoring: the source model scored on its own adversarial images
    gives the attack's own metrics; the saved dataset reloads to the same arrays."""
    from medsec.segmentation.dataset import load_seg_adversarial, save_seg_adversarial
    from medsec.segmentation.job import transfer_metrics

    model, data = trained
    spec = SegAttackConfig(name="erase", kind="erase", eps=32 / 255, steps=5)
    result = run_attack(model, spec, data.splits["test"], 8, 2)
    again = transfer_metrics(model, result, 2)
    for key, value in again.items():
        assert value == pytest.approx(result.metrics[key], nan_ok=True), key
    paths = save_seg_adversarial(tmp_path, result, {"mlflow_run_id": "r"})
    loaded = load_seg_adversarial(paths["npz"])
    assert np.array_equal(loaded.images, result.adversarial.numpy())
    assert np.array_equal(loaded.targets, result.targets.numpy())
    assert np.array_equal(loaded.clean_indices, result.indices)
    assert loaded.meta["attack"] == "erase" and len(loaded) == len(result.indices)
