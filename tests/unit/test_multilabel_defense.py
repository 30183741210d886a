"""Defenses on multi-label data (multi-hot labels (N, L), BCE): the stage scores them instead
of refusing; TRADES's per-finding Bernoulli KL against a hand computation; adversarial
training buys robust exact-match accuracy where a standard model has none; transforms and
detectors are scored with exact-match correctness under their adaptive attacks; class-only
defenses are refused in one line before any work; the defense flow ends FINISHED in a real
MLflow store."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medsec.attacks.pgd import PGD
from medsec.config import load_config
from medsec.data.types import ImageDataset, LoadedDataset
from medsec.defenses.build import BuildContext, build_defense, check_multilabel, undefended
from medsec.defenses.config import DefenseEvalConfig, DefenseSpec
from medsec.defenses.evaluate import evaluate_defense
from medsec.defenses.training import (
    AdversarialBatches,
    DefendedTraining,
    DistillationLoss,
    TemperatureLoss,
    TradesLoss,
    bernoulli_kl,
    trades_divergence,
    train_defended,
)
from medsec.errors import ConfigError
from medsec.models.config import ModelConfig
from medsec.stages import defense as stage
from medsec.training.checkpoint import load_classifier, save_classifier
from medsec.training.config import ClassifierRecipe, TrainConfig
from medsec.training.module import classification_loss

SIZE = 16
DELTA = 4 / 255  # amplitude of the non-robust pattern; the attacks use eps = 2 * DELTA
EPS = 8 / 255
AGREE = 0.9  # the robust block shows the finding's true value with this probability
PATTERNS = np.random.default_rng(123).choice([-1.0, 1.0], size=(2, 1, SIZE, SIZE)).astype(
    np.float32)


def _split(n: int, rng: np.random.Generator) -> ImageDataset:
    """Two findings, each with a robust and a non-robust feature (Tsipras et al. 2019):
    a bright half-image block (+0.3; left = finding 0, top = finding 1) that agrees with the
    finding in 90% of the images, and a fixed random +-DELTA pixel pattern whose sign is the
    finding (always right, but flipped by any attack with eps > DELTA)."""
    hot = (rng.random((n, 2)) < 0.5).astype(np.float32)
    shown = np.where(rng.random((n, 2)) < AGREE, hot, 1 - hot)
    images = 0.4 + rng.uniform(-0.05, 0.05, (n, 1, SIZE, SIZE)).astype(np.float32)
    images[shown[:, 0] == 1, :, :, : SIZE // 2] += 0.3
    images[shown[:, 1] == 1, :, : SIZE // 2, :] += 0.3
    for k in range(2):
        images += DELTA * (2 * hot[:, k] - 1)[:, None, None, None] * PATTERNS[k]
    return ImageDataset(np.clip(images, 0.0, 1.0).astype(np.float32), hot)


def robust_features_data(seed: int = 0, n_train: int = 512) -> LoadedDataset:
    rng = np.random.default_rng(seed)
    splits = {"train": _split(n_train, rng), "val": _split(64, rng), "test": _split(128, rng)}
    return LoadedDataset(name="two_findings", splits=splits, num_classes=2,
                         class_names=["left", "top"], source_path="<memory>",
                         version="tiny-ml-def", verification="synthetic", synthetic=True)


def _recipe(epochs: int = 6) -> ClassifierRecipe:
    return ClassifierRecipe(model=ModelConfig(), seed=0,
                            train=TrainConfig(batch_size=32, lr=3e-3, num_threads=1,
                                              epochs=epochs))


EVAL = DefenseEvalConfig(eps=EPS, steps=5, restarts=1, square_queries=20, max_examples=64,
                         steps_factor=2, batch_size=64)


@pytest.fixture(scope="module")
def data() -> LoadedDataset:
    out = robust_features_data()
    assert out.task == "multilabel"
    return out


@pytest.fixture(scope="module")
def standard(data):
    """The undefended (standard BCE) model."""
    return train_defended(_recipe(), data, DefendedTraining())


def _robust_exact_match(model, data: LoadedDataset) -> tuple[float, float]:
    """Clean and PGD-10 (BCE, eps 8/255) exact-match accuracy on the test split."""
    test = data.splits["test"]
    x, y = torch.from_numpy(test.images), torch.from_numpy(test.labels)
    model.eval()
    adv = PGD(model, eps=EPS, alpha=EPS / 4, steps=10, seed=0)(x, y)
    with torch.no_grad():
        clean = ((model(x) >= 0) == (y == 1)).all(1)
        robust = clean & ((model(adv) >= 0) == (y == 1)).all(1)
    return float(clean.double().mean()), float(robust.double().mean())


def test_bernoulli_kl_equals_a_hand_computation_and_is_zero_iff_equal():
    p = torch.tensor([[0.0, 2.0, -3.0], [1.5, -0.5, 0.25]], dtype=torch.float64)
    q = torch.tensor([[1.0, -2.0, -3.0], [-1.0, 0.5, 4.0]], dtype=torch.float64)

    def hand(a: float, b: float) -> float:
        sa, sb = 1 / (1 + math.exp(-a)), 1 / (1 + math.exp(-b))
        return sa * math.log(sa / sb) + (1 - sa) * math.log((1 - sa) / (1 - sb))

    expected = [sum(hand(a, b) for a, b in zip(row_p, row_q, strict=True))
                for row_p, row_q in zip(p.tolist(), q.tolist(), strict=True)]
    got = bernoulli_kl(p, q)
    assert got.shape == (2,)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)
    assert float(bernoulli_kl(p, p).abs().max()) == 0.0
    z = torch.randn(64, 3, generator=torch.Generator().manual_seed(0))
    assert bool((bernoulli_kl(z, z + 0.01 * torch.randn_like(z)) > 0).all())
    assert float(bernoulli_kl(z, z).abs().max()) == 0.0
    # stable at saturated logits (a naive log(sigmoid) gives inf/nan here)
    assert torch.isfinite(bernoulli_kl(torch.tensor([[40.0]]), torch.tensor([[-40.0]]))).all()
    # the single-label branch is still the softmax KL (TRADES's original batchmean KL)
    a, b = torch.randn(5, 4), torch.randn(5, 4)
    ref = F.kl_div(b.log_softmax(1), a.softmax(1), reduction="batchmean")
    assert float(trades_divergence(a, b, multilabel=False).mean()) == pytest.approx(float(ref))


def test_trades_loss_is_bce_plus_beta_times_the_finding_kl(data):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(SIZE * SIZE, 2))
    test = data.splits["test"]
    x, y = torch.from_numpy(test.images[:16]), torch.from_numpy(test.labels[:16])
    bce = float(F.binary_cross_entropy_with_logits(net(x), y))
    assert float(TradesLoss(EPS, EPS / 4, 3, beta=0.0)(net, x, y)) == pytest.approx(bce)
    assert float(classification_loss(net(x), y)) == pytest.approx(bce)
    with_kl = float(TradesLoss(EPS, EPS / 4, 3, beta=6.0)(net, x, y))
    assert with_kl > bce + 1e-6  # the inner PGD found outputs that differ from the clean ones


def test_adversarial_training_buys_robust_exact_match_where_standard_has_none(data, standard,
                                                                              tmp_path):
    """Oracle from the data's construction: the non-robust pattern (amplitude 4/255) is
    flipped by eps 8/255, so a model that uses it drops to ~0 robust exact match, while the
    robust blocks alone give AGREE^2 = 0.81 exact match (two findings) to a model that uses
    only them. PGD-AT (BCE inner loss) and TRADES (Bernoulli KL) must get there."""
    std_clean, std_robust = _robust_exact_match(standard.model, data)
    assert std_clean > 0.95 and std_robust < 0.1, (std_clean, std_robust)
    pgd_at = train_defended(_recipe(), data, DefendedTraining(
        batch_transform=AdversarialBatches(EPS, EPS / 4, 5, seed=0)))
    at_clean, at_robust = _robust_exact_match(pgd_at.model, data)
    assert at_robust > 0.6 and at_robust > std_robust + 0.5, (at_clean, at_robust)
    assert at_clean <= std_clean  # the price: the non-robust (always right) feature is gone
    trades = train_defended(_recipe(), data, DefendedTraining(
        loss_fn=TradesLoss(EPS, EPS / 4, 5, beta=6.0, seed=0)))
    _, trades_robust = _robust_exact_match(trades.model, data)
    assert trades_robust > 0.6, trades_robust
    # the defended checkpoint reloads with the same multi-label outputs
    path = save_classifier(tmp_path / "pgd_at.pt", pgd_at.model, pgd_at.meta)
    model, meta = load_classifier(path)
    x = torch.from_numpy(data.splits["test"].images[:8])
    with torch.no_grad():
        torch.testing.assert_close(model(x), pgd_at.model.eval()(x))
    assert meta["task"] == "multilabel"


def test_transforms_and_detectors_are_scored_with_exact_match(data, standard):
    ctx = BuildContext(_recipe(), EVAL, data, standard.model)
    test = data.splits["test"]
    x, y = torch.from_numpy(test.images[:64]), torch.from_numpy(test.labels[:64])
    base = evaluate_defense(undefended(standard.model), x, y, EVAL, seed=0)
    with torch.no_grad():
        hand = ((standard.model.eval()(x) >= 0) == (y == 1)).all(1)
    assert base.metrics["clean_acc"] == pytest.approx(float(hand.double().mean()))
    assert base.correct["clean"].shape == (64,)
    assert torch.equal(base.correct["clean"], hand)
    assert base.metrics["robust_acc"] < 0.1  # the BCE attacks break the non-robust model
    assert base.metrics["robust_acc_pgd_margin"] <= base.metrics["clean_acc"]
    for name, adaptive, params in (
            ("bit_depth", "bpda_pgd", {}), ("median_filter", "bpda_pgd", {}),
            ("jpeg", "bpda_pgd", {}), ("low_pass", "bpda_pgd", {}),
            ("magnet_reformer", "bpda_pgd", {"epochs": 1}),
            ("magnet_detector", "detector_aware_pgd", {"epochs": 1}),
            ("squeeze_detector", "detector_aware_pgd", {})):
        spec = DefenseSpec.model_validate({"name": name, "params": params})
        defense = build_defense(spec, ctx)
        result = evaluate_defense(defense, x, y, EVAL, seed=0)
        m = result.metrics
        assert 0.0 <= m["robust_acc"] <= m["robust_acc_" + adaptive] <= 1.0, (name, m)
        assert m["robust_acc"] <= m["clean_acc"], (name, m)
        assert all(c.shape == (64,) and c.dtype == torch.bool for c in result.correct.values())
        assert np.isfinite(m["zero_grad_fraction"])
    assert "detection_auroc_detector_aware_pgd" in m and 0.0 <= m["clean_reject_rate"] <= 1.0


def test_distillation_and_noise_training_use_per_finding_sigmoids(data, standard):
    """Distillation's soft labels are per-finding sigmoids of the teacher at temperature T
    (hand BCE reference); distillation and Gaussian-noise training build on multi-label
    data and keep (N, L) outputs."""
    teacher = standard.model.eval()
    torch.manual_seed(0)
    student = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(SIZE * SIZE, 2))
    test = data.splits["test"]
    x, y = torch.from_numpy(test.images[:16]), torch.from_numpy(test.labels[:16])
    t = 5.0
    with torch.no_grad():
        soft = torch.sigmoid(teacher(x) / t)
    z = student(x) / t
    hand = -(soft * F.logsigmoid(z) + (1 - soft) * F.logsigmoid(-z)).mean()
    assert float(DistillationLoss(teacher, t)(student, x, y)) == pytest.approx(float(hand),
                                                                                rel=1e-6)
    assert float(TemperatureLoss(t)(student, x, y)) == pytest.approx(
        float(F.binary_cross_entropy_with_logits(z, y)), rel=1e-6)
    ctx = BuildContext(_recipe(epochs=1), EVAL, data, standard.model)
    for spec in ({"name": "distillation", "params": {"epochs": 1, "temperature": 5}},
                 {"name": "gaussian_noise", "params": {"epochs": 1}}):
        defense = build_defense(DefenseSpec.model_validate(spec), ctx)
        assert defense.classifier is not None and defense.classifier(x).shape == (16, 2)


def test_class_only_defenses_are_skipped_with_a_record(data, standard):
    specs = [DefenseSpec.model_validate(s) for s in ("bit_depth", "smoothing", "mahalanobis")]
    with pytest.raises(ConfigError, match=r"^defense\.defenses\[1\]\.name: smoothing .*"
                                          r"remove it for multi-label data"):
        check_multilabel(specs, multilabel=True)  # the builder's own guard stays
    check_multilabel(specs, multilabel=False)  # single-label data: all apply
    ctx = BuildContext(_recipe(), EVAL, data, standard.model)
    with pytest.raises(ConfigError, match="mahalanobis fits one Gaussian per class"):
        build_defense(specs[2], ctx)
    cfg = load_config(overrides=["defense.defenses=[bit_depth, smoothing, mahalanobis]"])
    kept, skipped = stage.applicable(cfg, data)
    assert [s.key for s in kept.defense.defenses] == ["bit_depth"]
    assert [s.line() for s in skipped] == [
        "defense.defenses[1].name smoothing: not applicable to multi-label data (certifies the "
        "majority class of the noisy votes (Cohen et al.), which is not defined for several "
        "findings per image)",
        "defense.defenses[2].name mahalanobis: not applicable to multi-label data (fits one "
        "Gaussian per class and multi-hot labels give no class per image)"]
    assert {s.row()["status"] for s in skipped} == {"not applicable"}
    with pytest.raises(ConfigError, match=r"^defense\.defenses\[0\]\.name smoothing: not "
                                          r"applicable.*no configured entry applies"):
        stage.applicable(load_config(overrides=["defense.defenses=[smoothing]"]), data)


def test_defense_stage_scores_multilabel_test_images(data, standard):
    """The stage refused multi-label data; now it returns the multi-hot test labels."""
    cfg = load_config(overrides=["defense.defenses=[bit_depth, jpeg]",
                                 "defense.eval.max_examples=10"])
    images, labels = stage.eval_split(cfg, data, standard.model, cfg.model.name)
    assert images.shape == (10, 1, SIZE, SIZE) and labels.shape == (10, 2)
    torch.testing.assert_close(labels, torch.from_numpy(data.splits["test"].labels[:10]))
    # the default list: mahalanobis (defense.defenses[3]) and smoothing ([4]) are skipped
    default, skipped = stage.applicable(load_config(), data)
    assert [s.field for s in skipped] == ["defense.defenses[3].name", "defense.defenses[4].name"]
    assert "mahalanobis" not in {s.name for s in default.defense.defenses}


DEFENSES = ("[{name: fast_fgsm_at, params: {eps: 8/255}}, {name: trades, params: {eps: 8/255, "
            "steps: 2}}, {name: bit_depth, params: {bits: 3}}, {name: squeeze_detector}]")
FLOW_EVAL = ("{eps: 8/255, steps: 3, restarts: 1, square_queries: 10, max_examples: 16, "
             "steps_factor: 2}")


@pytest.mark.integration
def test_defense_flow_on_a_multilabel_manifest(tmp_path, monkeypatch, tracking_uri):
    import mlflow
    from flows.defense import defense_flow
    from medsec.data.prepare import load_prepared
    from medsec.stages import classifier
    from medsec.stages.data import data_source
    from tests.unit.test_multilabel import multilabel_manifest

    raw = tmp_path / "raw"
    multilabel_manifest(raw, n_patients=24)
    monkeypatch.chdir(tmp_path)
    overrides = ["dataset.source=manifest", "dataset.name=own", "dataset.path=manifest.csv",
                 f"dataset.data_dir={raw}", "dataset.image_size=16", "model.name=small_cnn",
                 "train.epochs=2", "train.batch_size=8", "train.num_threads=1",
                 f"defense.defenses={DEFENSES}", f"defense.eval={FLOW_EVAL}"]
    threads = torch.get_num_threads()
    try:
        cfg = load_config(overrides=overrides)  # the train stage's checkpoint, made directly
        ml = load_prepared(data_source(cfg), tmp_path / "prepared")
        assert ml.task == "multilabel"
        trained = classifier.train(cfg, ml)
        save_classifier(tmp_path / "models" / "classifier.pt", trained.model, trained.meta)
        result = defense_flow(overrides=overrides)
    finally:
        torch.set_num_threads(threads)
    labels = {"undefended", "fast_fgsm_at", "trades", "bit_depth", "squeeze_detector"}
    mlflow.set_tracking_uri(tracking_uri)
    runs = {r.data.tags["medsec.defense"]: r
            for r in mlflow.search_runs(search_all_experiments=True, output_format="list")}
    assert set(runs) == labels == set(result["run_ids"])
    for label, run in runs.items():
        assert run.info.status == "FINISHED", label
        assert run.data.tags["medsec.defense.status"] == "ok", label
        for key in ("clean_acc", "robust_acc", "robust_acc_standard", "robust_acc_adaptive"):
            assert 0.0 <= run.data.metrics[key] <= 1.0, (label, key)
    assert "robust_acc_bpda_pgd" in runs["bit_depth"].data.metrics
    assert "detection_auroc_detector_aware_pgd" in runs["squeeze_detector"].data.metrics
    on_disk = json.loads((tmp_path / "metrics" / "defense.json").read_text())
    assert set(on_disk) == labels
    index = json.loads((tmp_path / "models" / "defended" / "index.json").read_text())
    assert set(index) == {"fast_fgsm_at", "trades"}
    model, meta = load_classifier(tmp_path / index["trades"]["path"])
    assert meta["defense"] == "trades" and meta["task"] == "multilabel"
    assert model(torch.rand(2, 1, 16, 16)).shape == (2, 3)
