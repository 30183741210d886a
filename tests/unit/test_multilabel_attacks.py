"""Evasion attacks on multi-label data (multi-hot labels (N, L), one sigmoid per finding):
the BCE and margin losses against hand-written oracles, PGD against a hand-written BCE-PGD,
robustness invariants on a trained tiny model, clear label errors, the stage's refusals."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medsec.attacks.base import (
    bce_loss,
    cross_entropy_loss,
    margin_loss,
    multilabel_margin_loss,
    predictions,
)
from medsec.attacks.deepfool import DeepFool
from medsec.attacks.pgd import PGD
from medsec.attacks.registry import build_attack
from medsec.attacks.scoring import run_attack, worst_case
from medsec.metrics.robustness import robust_correct
from medsec.models.checks import check_classifier
from medsec.training.module import classification_loss

L = 3


def _linear(seed: int = 0, size: int = 8) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(size * size, L)).eval()


def _data(n: int, size: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (n, 1, size, size) in [0, 1] whose findings are bright quadrants: finding k is
    present when quadrant k is bright; labels multi-hot float32 (n, 3)."""
    g = torch.Generator().manual_seed(seed)
    y = (torch.rand(n, L, generator=g) < 0.5).float()
    x = 0.8 * torch.rand(n, 1, size, size, generator=g)
    h = size // 2
    quads = [(slice(0, h), slice(0, h)), (slice(0, h), slice(h, size)),
             (slice(h, size), slice(0, h))]
    for k, (r, c) in enumerate(quads):
        x[:, 0, r, c] += 0.25 * y[:, k, None, None]
    return x.clamp(0, 1), y


@pytest.fixture(scope="module")
def trained() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A linear multi-label model trained with BCE on the quadrant data (~1 s)."""
    model = _linear(1)
    x, y = _data(256, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(150):
        opt.zero_grad()
        classification_loss(model(x), y).backward()
        opt.step()
    model.eval()
    xt, yt = _data(64, seed=2)
    return model, xt, yt


# ------------------------------------------------------------------ losses


def test_bce_loss_is_training_loss_per_example_and_default_dispatch():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(6, L, generator=g, dtype=torch.float64)
    y = (torch.rand(6, L, generator=g) < 0.5).double()
    manual = -(y * torch.log(torch.sigmoid(z)) + (1 - y) * torch.log(1 - torch.sigmoid(z)))
    assert torch.allclose(bce_loss(z, y), manual.mean(1))
    assert torch.allclose(bce_loss(z, y), classification_loss(z, y, reduction="none"))
    assert torch.equal(cross_entropy_loss(z, y), bce_loss(z, y))  # chosen by label shape
    assert torch.equal(margin_loss(z, y), multilabel_margin_loss(z, y))
    labels = torch.tensor([0, 2, 1, 1, 0, 2])
    assert torch.equal(cross_entropy_loss(z, labels), F.cross_entropy(z, labels, reduction="none"))
    true = z[torch.arange(6), labels]
    other = z.masked_fill(F.one_hot(labels, L).bool(), float("-inf")).amax(1)
    assert torch.equal(margin_loss(z, labels), other - true)


def test_margin_loss_positive_iff_some_finding_wrong_exhaustive():
    """Every label vector in {0,1}^3 against every logit vector in {-2,-0.5,0.5,2}^3 (no
    ties): loss > 0 exactly when the exact-match prediction is wrong."""
    values = (-2.0, -0.5, 0.5, 2.0)
    zs = torch.tensor(list(itertools.product(values, repeat=L)))
    ys = torch.tensor(list(itertools.product((0.0, 1.0), repeat=L)))
    z = zs.repeat_interleave(len(ys), 0)
    y = ys.repeat(len(zs), 1)
    wrong = ~robust_correct(y, predictions(z, y))
    loss = multilabel_margin_loss(z, y)
    assert len(z) == 512 and 0 < int(wrong.sum()) < 512
    assert torch.equal(loss > 0, wrong)
    # the margin is how far the worst finding is from its threshold
    assert torch.allclose(loss.abs(), ((2 * y - 1) * z).amin(1).abs())


def test_predictions_threshold_logit_zero_and_exact_match():
    z = torch.tensor([[0.0, -0.1, 3.0], [-1.0, 1.0, -2.0]])
    y = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    assert torch.equal(predictions(z, y), torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]))
    assert robust_correct(y, predictions(z, y)).tolist() == [True, False]
    assert robust_correct(y.numpy(), predictions(z, y).numpy()).tolist() == [True, False]


# ------------------------------------------------------------------ PGD oracle


def _reference_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                   alpha: float, steps: int, seed: int) -> torch.Tensor:
    """Madry's Linf PGD on the mean-over-findings BCE, written out: uniform start in the
    eps cube (the same generator draw), signed-gradient steps, clip to the cube and [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(x.shape, generator=g)
    adv = (x + (2 * u - 1) * eps).clamp(0, 1)
    for _ in range(steps):
        adv = adv.detach().requires_grad_(True)
        z = model(adv)
        loss = F.binary_cross_entropy_with_logits(z, y, reduction="none").mean(1).sum()
        (grad,) = torch.autograd.grad(loss, adv)
        adv = adv.detach() + alpha * grad.sign()
        adv = torch.min(torch.max(adv, x - eps), x + eps).clamp(0, 1)
    return adv.detach()


def test_pgd_equals_hand_written_bce_pgd(trained):
    model, x, y = trained
    eps, alpha, steps = 8 / 255, 2 / 255, 7
    attack = PGD(model, eps=eps, alpha=alpha, steps=steps, early_stop=False, seed=5)
    adv = attack(x, y)
    ref = _reference_pgd(model, x, y, eps, alpha, steps, seed=5)
    assert torch.allclose(adv, ref, atol=1e-6)
    assert float((adv - x).abs().max()) <= eps + 1e-6
    other = _reference_pgd(model, x, y, eps, alpha, steps, seed=6)
    assert not torch.allclose(other, ref, atol=1e-6)  # the comparison can fail
    # early stopping freezes an example at its first adversarial iterate (examples do not
    # interact): every example fooled by the final iterate is fooled by the early-stopped one
    with torch.no_grad():
        early = PGD(model, eps=eps, alpha=alpha, steps=steps, seed=5)(x, y)
        fooled_early = ~robust_correct(y, predictions(model(early), y))
        fooled_final = ~robust_correct(y, predictions(model(adv), y))
    assert bool(fooled_final.any()) and bool((fooled_early | ~fooled_final).all())


# ------------------------------------------------------------------ invariants


ATTACKS = {
    "fgsm": {},
    "bim": {"steps": 5},
    "pgd": {"steps": 10, "alpha": 2 / 255},
    "mim": {"steps": 5},
    "apgd": {"steps": 10},
    "apgd_margin": {"steps": 10, "loss": "margin"},
    "square": {"n_queries": 60},
    "autoattack_lite": {"steps": 10, "n_queries": 60},
}


def _build(key: str, model: nn.Module, eps: float):
    name = "apgd" if key == "apgd_margin" else key
    return build_attack(name, model, eps=eps, **ATTACKS[key])


def test_eps0_gives_clean_exact_match_and_robust_acc_bounded(trained):
    model, x, y = trained
    clean_correct = robust_correct(y, predictions(model(x), y))
    clean_acc = float(clean_correct.float().mean())
    assert 0.6 < clean_acc < 1.0, clean_acc  # the model is trained; some room to attack
    for key in ATTACKS:
        zero = run_attack(model, _build(key, model, 0.0), x, y).metrics
        assert zero["clean_acc"] == pytest.approx(clean_acc)
        assert zero["robust_acc"] == pytest.approx(clean_acc), key
        out = run_attack(model, _build(key, model, 16 / 255), x, y)
        m = out.metrics
        assert out.adv_pred.shape == y.shape and out.clean_pred.shape == y.shape
        manual = robust_correct(y, predictions(model(x), y), predictions(model(out.adversarial), y))
        assert m["robust_acc"] == pytest.approx(float(manual.float().mean())), key
        assert m["robust_acc"] <= clean_acc + 1e-12, key
        assert m["robust_acc"] < clean_acc, key  # every attack finds something at 16/255


def test_pgd_robust_acc_is_monotone_in_eps_and_worst_case_is_per_example(trained):
    model, x, y = trained
    accs, points = [], []
    for eps in (0.0, 2 / 255, 4 / 255, 8 / 255, 16 / 255, 32 / 255):
        out = run_attack(model, _build("pgd", model, eps), x, y)
        accs.append(out.metrics["robust_acc"])
        points.append(out)
    assert all(b <= a for a, b in zip(accs, accs[1:], strict=False)), accs
    assert accs[-1] < accs[0] - 0.2, accs
    clean_pred = points[0].clean_pred.numpy()
    fgsm = run_attack(model, _build("fgsm", model, 8 / 255), x, y)
    pgd = points[3]

    class _Point:  # the fields worst_case reads
        def __init__(self, outcome, ident):
            self.eps, self.norm, self.adv_pred = 8 / 255, "linf", outcome.adv_pred.numpy()
            self.spec = type("S", (), {"id": ident})()

    rows = worst_case([_Point(fgsm, "fgsm"), _Point(pgd, "pgd")], y.numpy(), clean_pred)
    both = (robust_correct(y, fgsm.adv_pred) & robust_correct(y, pgd.adv_pred)
            & robust_correct(y, points[0].clean_pred))
    assert rows[0]["robust_acc"] == pytest.approx(float(both.float().mean()))
    assert rows[0]["robust_acc"] <= min(fgsm.metrics["robust_acc"], pgd.metrics["robust_acc"])


# ------------------------------------------------------------------ label checks


def test_label_errors_are_clear(trained):
    model, x, y = trained
    pgd = PGD(model, eps=4 / 255, steps=2)
    half = y.clone()
    half[0, 1] = 0.5
    with pytest.raises(ValueError, match="0 or 1 per finding, got the value 0.5"):
        pgd(x, half)
    with pytest.raises(ValueError, match="2 findings but the model returns 3 logits"):
        pgd(x, y[:, :2])
    with pytest.raises(ValueError, match=r"shape \(64, num_findings\)"):
        pgd(x, y[:10])
    with pytest.raises(ValueError, match="targeted PGD needs one target class"):
        PGD(model, eps=4 / 255, targeted=True)(x, y)
    with pytest.raises(ValueError, match="DeepFool needs one class per image"):
        DeepFool(model, eps=4 / 255)(x, y)
    with pytest.raises(ValueError, match="sigmoid probabilities"):
        check_classifier(nn.Sequential(model, nn.Sigmoid()), x, y)
    assert check_classifier(model, x, y) == L
    assert check_classifier(model, x, y.long()) == L  # integer multi-hot is fine too
    assert np.isclose(float(pgd(x, y.long()).sub(x).abs().max()), 4 / 255, atol=1e-6)


# ------------------------------------------------------------------ the stage


def _multilabel_data(n: int = 48):
    from medsec.data.types import ImageDataset, LoadedDataset

    splits = {}
    for seed, name in enumerate(("train", "val", "test")):
        x, y = _data(n, size=16, seed=10 + seed)
        splits[name] = ImageDataset(x.numpy(), y.numpy())
    return LoadedDataset("own", splits, L, ["effusion", "nodule", "opacity"], "manifest.csv",
                         "0" * 32, "unverified (test)")


def _stage_cfg(attacks: str, *extra: str):
    from medsec.config import load_config

    return load_config(overrides=[f"attack.attacks={attacks}", "attack.n_examples=32",
                                  "dataset.image_size=16", *extra])


def test_stage_skips_class_only_attacks_with_a_record_and_refuses_when_none_remains(caplog):
    from medsec.data.types import ImageDataset
    from medsec.errors import ConfigError
    from medsec.stages import attack as stage

    data = _multilabel_data()
    cfg = _stage_cfg("[{name: fgsm, eps: [4/255]}, {name: deepfool, eps: [4/255]}, "
                     "{name: pgd, eps: [4/255], targeted: true}, {name: uap, eps: [8/255]}]")
    model = _linear(0, size=16)
    with caplog.at_level("WARNING"):
        kept, skipped = stage.applicable(cfg, data)
    assert [s.id for s in kept.attack.attacks] == ["fgsm"]  # order and survivors kept
    assert [s.id for s in cfg.attack.attacks] == ["fgsm", "deepfool", "pgd", "uap"]  # untouched
    assert [(s.field, s.entry) for s in skipped] == [
        ("attack.attacks[1]", "deepfool"), ("attack.attacks[2]", "pgd"),
        ("attack.attacks[3]", "uap")]
    assert skipped[0].line() == ("attack.attacks[1] deepfool: not applicable to multi-label "
                                 "data (deepfool needs one class per image)")
    assert "a targeted attack aims at one target class" in skipped[1].reason
    assert skipped[2].row()["status"] == "not applicable"
    assert [r.getMessage() for r in caplog.records if "not applicable" in r.getMessage()] == [
        f"{s.line()}; skipped" for s in skipped]  # one warning line per skipped attack
    stage.check_victim(kept, data, model, "models/classifier.pt")  # survivors: no error
    # nothing left to run: one line naming every field
    only = _stage_cfg("[{name: deepfool, eps: [4/255]}, {name: cw, eps: [4/255]}]")
    with pytest.raises(ConfigError) as err:
        stage.applicable(only, data)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("attack.attacks[0] deepfool: not applicable")
    assert "attack.attacks[1] cw" in msg and "no configured entry applies" in msg
    ok = _stage_cfg("[{name: fgsm, eps: [4/255]}, {name: square, eps: [4/255]}]")
    assert stage.applicable(ok, data) == (ok, [])  # supported: nothing skipped
    # single-label data: every attack stays
    single = dataclasses.replace(data, splits={
        k: ImageDataset(v.images, v.labels[:, 0].astype(np.int64)) for k, v in data.splits.items()})
    assert single.task == "multiclass"
    assert stage.applicable(only, single) == (only, [])


def test_suite_on_multilabel_data_worst_case_transfer_scaling_and_files(trained, tmp_path):
    from medsec.attacks.dataset import load_adversarial, write_suite
    from medsec.attacks.suite import run_suite
    from medsec.data.types import ImageDataset

    model, x, y = trained
    x, y = x[:32], y[:32]  # attack.n_examples
    test = ImageDataset(x.numpy(), y.numpy())
    surrogate = _linear(7)
    opt = torch.optim.Adam(surrogate.parameters(), lr=0.05)
    xs, ys = _data(256, seed=3)
    for _ in range(100):
        opt.zero_grad()
        classification_loss(surrogate(xs), ys).backward()
        opt.step()
    cfg = _stage_cfg("[{name: fgsm, eps: [8/255]}, {name: pgd, eps: [8/255], params: {steps: 5}},"
                     " {name: autoattack_lite, eps: [8/255], params: {steps: 5, n_queries: 30}}]",
                     "attack.transfer={surrogate: {model: small_cnn, seed: 1}, attacks: [pgd]}",
                     "attack.image_scaling={source_size: 32, n_examples: 4, steps: 20}").attack
    result = run_suite(model.eval(), test, cfg, surrogate=surrogate.eval())
    m = result.metrics()
    clean = float(robust_correct(y, predictions(model(x), y)).float().mean())
    assert m["clean_acc"] == pytest.approx(clean)
    both = robust_correct(y.numpy(), result.clean_pred,
                          *(p.adv_pred for p in result.points))
    assert m["worst_case_eps8_robust_acc"] == pytest.approx(float(both.mean()))
    assert m["worst_case_eps8_robust_acc"] <= min(m["fgsm_eps8_robust_acc"],
                                                  m["pgd_eps8_robust_acc"],
                                                  m["autoattack_lite_eps8_robust_acc"])
    assert 0.0 < m["pgd_eps8_macro_auc"] <= 1.0
    assert m["transfer_pgd_eps8_victim_robust_acc"] <= m["transfer_pgd_eps8_victim_clean_acc"]
    assert m["transfer_pgd_eps8_victim_clean_acc"] == pytest.approx(clean)
    assert 0.0 <= m["image_scaling_success_rate"] <= 1.0
    index = write_suite(tmp_path / "adv", result, {"checkpoint": "m.pt"}, _multilabel_data())
    assert [e["name"] for e in index][:3] == ["fgsm_eps8", "pgd_eps8", "autoattack_lite_eps8"]
    back = load_adversarial(tmp_path / "adv" / "pgd_eps8.npz")
    assert back.labels.dtype == np.float32 and np.array_equal(back.labels, y.numpy())
    assert back.meta["data"]["task"] == "multilabel"
