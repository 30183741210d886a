"""The attack suite on a tiny trained CNN: orderings, monotonicity, worst case, the written
adversarial datasets (loader, budget, metadata, determinism) and bad-input errors."""

from __future__ import annotations

import hashlib
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from medsec.attacks.base import lp_norm
from medsec.attacks.config import AttackConfig, AttackSpec
from medsec.attacks.dataset import REQUIRED_META, load_adversarial, write_suite
from medsec.attacks.registry import ATTACKS, attack_params
from medsec.attacks.results import AttackPoint
from medsec.attacks.runner import run_spec, transfer_spec
from medsec.attacks.scoring import masking_flags
from medsec.attacks.suite import finish_suite, run_suite, start_suite
from medsec.config import config_from_dict
from medsec.data.types import ImageDataset
from medsec.errors import ConfigError, DataError
from medsec.stages.attack import check_surrogate
from tests.unit.attack_fixtures import (  # noqa: F401
    ProbabilityModel,
    SegmentationModel,
    accuracy,
    make_dataset,
    single_thread,
    trained_model,
)

EPS = (2 / 255, 4 / 255, 8 / 255)
DATA = SimpleNamespace(
    name="blobs", version="0" * 32, verification="synthetic", class_names=["a", "b", "c"]
)
SOURCE = {
    "checkpoint": "models/classifier.pt",
    "checkpoint_md5": "f" * 32,
    "mlflow_run_id": "run123",
    "model_name": "tiny_cnn",
}


def _config(**section) -> AttackConfig:
    return config_from_dict({"attack": section}).attack


def _split(images: torch.Tensor, labels: torch.Tensor) -> ImageDataset:
    return ImageDataset(images.numpy(), labels.numpy())


@pytest.fixture(scope="module")
def setup():
    model, x, y = trained_model(3)
    x_train, y_train = make_dataset(128, 3, seed=7)
    return model, _split(x, y), _split(x_train, y_train)


@pytest.fixture(scope="module")
def result(setup):
    model, test, train = setup
    cfg = _config(
        n_examples=64,
        batch_size=32,
        attacks=[
            {"name": "fgsm", "eps": list(EPS)},
            {"name": "pgd", "eps": list(EPS), "params": {"alpha": "eps/4"}},
            {"name": "uap", "eps": ["8/255"], "params": {"epochs": 1}},
            {"name": "pgd", "label": "pgd_targeted", "eps": ["8/255"], "targeted": True},
            {"name": "deepfool", "params": {"steps": 20}},
        ],
        uap_fit_size=128,
        transfer={"attacks": ["fgsm"]},
        image_scaling={"n_examples": 4, "source_size": 112},
    )
    surrogate, _, _ = trained_model(3, seed=1)
    return run_suite(model, test, cfg, train=train, surrogate=surrogate)


def test_pgd_beats_fgsm_beats_noise_of_equal_norm(setup, result) -> None:
    model, test, _ = setup
    x, y = test.tensors()
    robust = {(p.spec.id, p.eps): p.metrics["robust_acc"] for p in result.points}
    g = torch.Generator().manual_seed(0)
    signs = torch.randint(0, 2, x.shape, generator=g).float() * 2 - 1
    for eps in EPS:
        noise = accuracy(model, (x + eps * signs).clamp(0, 1), y)
        assert robust[("pgd", eps)] <= robust[("fgsm", eps)] <= noise, eps
    assert robust[("pgd", EPS[-1])] < accuracy(model, x, y)  # the attacks do something


def test_robust_accuracy_does_not_rise_with_epsilon(result) -> None:
    for ident in ("fgsm", "pgd"):
        accs = [p.metrics["robust_acc"] for p in result.points if p.spec.id == ident]
        assert all(a >= b for a, b in zip(accs, accs[1:], strict=False)), (ident, accs)
    worst = [row["robust_acc"] for row in result.worst_case]
    assert all(a >= b for a, b in zip(worst, worst[1:], strict=False))
    for row in result.worst_case:  # the worst case is at most every attack at its epsilon
        for p in result.points:
            if p.eps == row["eps"]:
                assert row["robust_acc"] <= p.metrics["robust_acc"]


def test_rows_metrics_and_other_families(result) -> None:
    names = [p.name for p in result.points]
    assert names[:3] == ["fgsm_eps2", "fgsm_eps4", "fgsm_eps8"]
    assert "deepfool_unbounded" in names and "uap_eps8" in names
    uap = next(p for p in result.points if p.spec.name == "uap")
    assert 0.0 <= uap.metrics["fooling_rate"] <= 1.0 and "fit_fooling_rate" in uap.metrics
    targeted = next(p for p in result.points if p.spec.id == "pgd_targeted")
    assert targeted.targets is not None and "target_success_rate" in targeted.metrics
    flat = result.metrics()
    assert flat["clean_acc"] == pytest.approx(result.clean_acc)
    assert {
        "pgd_eps8_robust_acc",
        "pgd_eps8_mean_ssim",
        "worst_case_eps8_robust_acc",
        "transfer_fgsm_eps8_victim_robust_acc",
        "image_scaling_success_rate",
    } <= set(flat)
    assert not any("seconds" in k for k in flat)  # timings only with timings=True
    assert "pgd_eps8_seconds_per_image" in result.metrics(timings=True)
    scaling = result.image_scaling
    assert scaling is not None and scaling.metrics["success_rate"] >= 0.75
    assert scaling.metrics["mean_mse_target"] < 1e-4
    rows = result.curve_rows()
    assert {
        "attack": "pgd",
        "eps": EPS[-1],
        "robust_acc": robust_of(result, "pgd_eps8"),
        "norm": "linf",
    } in rows


def robust_of(result, name: str) -> float:
    return next(p for p in result.points if p.name == name).metrics["robust_acc"]


def test_written_datasets_load_back_within_budget(tmp_path, setup, result) -> None:
    _, test, _ = setup
    index = write_suite(tmp_path / "adversarial", result, SOURCE, DATA)
    assert len(index) == len(result.points) + 1  # + the image-scaling images
    for point in result.points:
        loaded = load_adversarial(tmp_path / "adversarial" / f"{point.name}.npz")
        assert loaded.images.dtype == np.float32 and loaded.images.shape == (64, 1, 28, 28)
        np.testing.assert_array_equal(loaded.images, point.adversarial)
        np.testing.assert_array_equal(loaded.labels, test.labels[loaded.clean_indices])
        assert 0.0 <= loaded.images.min() and loaded.images.max() <= 1.0
        if point.eps is not None:
            delta = np.abs(loaded.images - test.images[loaded.clean_indices]).max()
            assert delta <= point.eps + 1e-6, point.name
        meta = loaded.meta
        assert set(REQUIRED_META) <= set(meta)
        assert meta["attack"] == point.spec.name and meta["eps"] == point.eps
        assert meta["source_model"]["checkpoint_md5"] == "f" * 32
        assert meta["source_model"]["mlflow_run_id"] == "run123"
        assert meta["data"] == {
            "name": "blobs",
            "version": "0" * 32,
            "split": "test",
            "verification": "synthetic",
            "class_names": ["a", "b", "c"],
        }
        assert meta["params"]["seed"] == 0 and "seconds_per_image" not in meta["metrics"]
        assert (loaded.targets is not None) == point.spec.targeted
    raw = np.load(tmp_path / "adversarial" / "pgd_eps8.npz")  # what other tools see
    assert raw["test_images"].shape == (64, 28, 28) and raw["test_labels"].shape == (64, 1)
    listing = json.loads((tmp_path / "adversarial" / "index.json").read_text())
    assert [d["name"] for d in listing["datasets"]][:2] == ["fgsm_eps2", "fgsm_eps4"]


def test_same_config_same_bytes(tmp_path, setup) -> None:
    model, test, _ = setup
    cfg = _config(
        n_examples=16, attacks=[{"name": "pgd", "eps": ["4/255"]}], image_scaling={"enabled": False}
    )
    digests = []
    for i in range(2):
        write_suite(tmp_path / f"run{i}", run_suite(model, test, cfg), SOURCE, DATA)
        data = (tmp_path / f"run{i}" / "pgd_eps4.npz").read_bytes()
        data += (tmp_path / f"run{i}" / "pgd_eps4.json").read_bytes()
        digests.append(hashlib.md5(data).hexdigest())
    assert digests[0] == digests[1]


def test_rewrite_replaces_old_datasets(tmp_path, setup) -> None:
    model, test, _ = setup
    target = tmp_path / "adversarial"
    (target).mkdir()
    (target / "stale_eps3.npz").write_bytes(b"old")
    cfg = _config(
        n_examples=8,
        attacks=[{"name": "fgsm", "eps": ["4/255"]}],
        image_scaling={"enabled": False},
        save_adversarial=False,
    )
    write_suite(target, run_suite(model, test, cfg), SOURCE, DATA, save=False)
    assert sorted(p.name for p in target.iterdir()) == ["index.json"]
    with pytest.raises(DataError, match="not found"):
        load_adversarial(target / "fgsm_eps4.npz")


@pytest.mark.parametrize(
    ("wrap", "mutate", "match"),
    [
        (ProbabilityModel, None, "probabilities.*remove the final softmax"),
        (lambda m: SegmentationModel(3), None, r"2-D logits.*segmentation"),
        (None, lambda x: x * 2, r"must lie in \[0, 1\]"),
    ],
)
def test_bad_input_is_named(setup, wrap, mutate, match: str) -> None:
    model, test, _ = setup
    if wrap is not None:
        model = wrap(model)
    if mutate is not None:
        test = ImageDataset(mutate(test.images), test.labels)
    with pytest.raises(ValueError, match=match):
        run_suite(model, test, _config(n_examples=8))


def test_suite_needs_its_inputs(setup) -> None:
    model, test, _ = setup
    with pytest.raises(ValueError, match="uap needs training images"):
        run_suite(
            model,
            test,
            _config(
                n_examples=8,
                attacks=[{"name": "uap", "eps": [0.1]}],
                image_scaling={"enabled": False},
            ),
        )
    with pytest.raises(ValueError, match="pass the trained surrogate"):
        run_suite(
            model, test, _config(n_examples=8, attacks=[{"name": "pgd", "eps": [0.1]}], transfer={})
        )
    with pytest.raises(ValueError, match="source_size=16 must exceed"):
        run_suite(
            model,
            test,
            _config(
                n_examples=8,
                attacks=[{"name": "fgsm", "eps": [0.1]}],
                image_scaling={"source_size": 16},
            ),
        )
    same = config_from_dict(
        {
            "attack": {
                "transfer": {"surrogate": {"seed": 0}},
                "attacks": [{"name": "pgd", "eps": [0.1]}],
            }
        }
    )
    with pytest.raises(ConfigError, match="attack.transfer.surrogate: .*victim's own"):
        check_surrogate(same)


def _point(name: str, eps: float, robust: float, label: str | None = None) -> AttackPoint:
    spec = AttackSpec.model_construct(name=name, params={}, eps=(eps,), targeted=False, label=label)
    empty = np.zeros(0)
    return AttackPoint(spec, eps, "linf", {}, {"robust_acc": robust}, empty, empty)


def test_gradient_masking_flags() -> None:
    healthy = [
        _point("pgd", 2 / 255, 0.5),
        _point("pgd", 8 / 255, 0.2),
        _point("square", 8 / 255, 0.3),
    ]
    assert masking_flags(healthy, 100) == []
    masked = [
        _point("pgd", 2 / 255, 0.5),
        _point("pgd", 8 / 255, 0.7),
        _point("square", 8 / 255, 0.1),
    ]
    flags = masking_flags(masked, 100)
    assert any("pgd: robust_acc rises from 0.500 (eps2) to 0.700 (eps8)" in f for f in flags)
    assert any("black-box square (0.100) beats every gradient attack (0.700)" in f for f in flags)
    assert masking_flags([_point("pgd", 2 / 255, 0.50), _point("pgd", 8 / 255, 0.505)], 100) == []


def test_transfer_spends_the_full_budget() -> None:
    spec = _config(attacks=[{"name": "pgd", "eps": [0.1]}]).attacks[0]
    assert transfer_spec(spec).params["early_stop"] is False
    kept = _config(attacks=[{"name": "pgd", "eps": [0.1], "params": {"early_stop": True}}])
    assert transfer_spec(kept.attacks[0]).params["early_stop"] is True
    fgsm = _config(attacks=[{"name": "fgsm", "eps": [0.1]}]).attacks[0]
    assert transfer_spec(fgsm) == fgsm  # no such parameter


def test_specs_run_alone_in_any_order_give_the_suite(setup) -> None:
    """What the flow does (one Prefect task per spec, finished in config order) equals
    run_suite: no spec's numbers depend on another's."""
    model, test, train = setup
    cfg = _config(
        n_examples=16,
        attacks=[{"name": "fgsm", "eps": [0.05]}, {"name": "pgd", "eps": [0.05, 0.1]}],
        image_scaling={"enabled": False},
    )
    whole = run_suite(model, test, cfg, train=train)
    suite = start_suite(model, test, cfg)
    by_spec = {s.id: run_spec(s, model, suite, cfg, train) for s in reversed(cfg.attacks)}
    alone = finish_suite(suite, [p for s in cfg.attacks for p in by_spec[s.id]], model, cfg)
    assert alone.metrics() == whole.metrics()  # timings left out
    assert alone.worst_case == whole.worst_case


THREAT_MODELS = {  # the published threat model of each attack at its default settings
    "fgsm": "linf", "bim": "linf", "pgd": "linf", "mim": "linf", "apgd": "linf",
    "autoattack_lite": "linf", "square": "linf", "uap": "linf", "cw": "l2", "deepfool": "l2",
    "one_pixel": "l0",
}
CHEAP = {"bim": {"steps": 1}, "pgd": {"steps": 1}, "mim": {"steps": 1}, "apgd": {"steps": 2},
         "cw": {"steps": 2, "binary_search_steps": 1}, "deepfool": {"steps": 2},
         "square": {"n_queries": 2}, "one_pixel": {"population": 4, "steps": 1},
         "uap": {"epochs": 1}, "autoattack_lite": {"steps": 2, "n_queries": 2}}


def test_recorded_norm_is_each_attacks_threat_model(setup) -> None:
    model, test, train = setup
    assert set(THREAT_MODELS) == set(ATTACKS)  # a new attack needs its row here
    cfg = _config(n_examples=4, batch_size=4, uap_fit_size=8)
    suite = start_suite(model, test, cfg)
    for name, norm in THREAT_MODELS.items():
        eps = (8 / 255,) if attack_params(name).get("eps", None) is not None else ()
        spec = AttackSpec(name=name, eps=eps, params=CHEAP.get(name, {}))
        (point,) = run_spec(spec, model, suite, cfg, train=train)
        assert point.norm == norm, name
        if eps:  # and the perturbation respects the budget in that norm
            delta = torch.from_numpy(point.adversarial) - torch.from_numpy(suite.images)
            assert float(lp_norm(delta, norm).max()) <= eps[0] + 1e-6, name
    l2 = AttackSpec(name="pgd", eps=(0.5,), params={"norm": "l2", "steps": 1})
    assert run_spec(l2, model, suite, cfg)[0].norm == "l2"
