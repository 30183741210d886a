"""Attack strength on a trained tiny CNN: orderings, monotonicity, targeted success,
black-box query accounting, UAP, the worst-case ensemble and transfer evaluation."""

from __future__ import annotations

import pytest
import torch

from medsec.attacks import (
    APGD,
    FGSM,
    PGD,
    UAP,
    AutoAttackLite,
    DeepFool,
    OnePixel,
    Square,
    build_attack,
    transfer_evaluate,
)
from medsec.attacks.apgd import checkpoints
from medsec.attacks.square import p_selection
from tests.unit.attack_fixtures import (  # noqa: F401
    SegmentationModel,
    accuracy,
    single_thread,
    trained_model,
)

EPS = 8 / 255


@pytest.fixture(scope="module")
def three_class():
    return trained_model(3)


@pytest.fixture(scope="module")
def binary():
    return trained_model(2)


def test_fixture_model_is_accurate(three_class, binary) -> None:
    for model, x, y in (three_class, binary):
        assert accuracy(model, x, y) >= 0.95


def test_pgd_beats_fgsm_beats_random_noise(three_class) -> None:
    model, x, y = three_class
    g = torch.Generator().manual_seed(0)
    signs = torch.randint(0, 2, x.shape, generator=g).float() * 2 - 1
    noise_acc = accuracy(model, (x + EPS * signs).clamp(0, 1), y)
    fgsm_acc = accuracy(model, FGSM(model, eps=EPS)(x, y), y)
    pgd_acc = accuracy(model, PGD(model, eps=EPS, alpha=EPS / 4, steps=10)(x, y), y)
    assert pgd_acc <= fgsm_acc <= noise_acc
    assert pgd_acc < noise_acc  # the attacks do something at this budget


def test_pgd_robust_accuracy_non_increasing_in_eps(three_class) -> None:
    model, x, y = three_class
    accs = [
        accuracy(model, PGD(model, eps=e, alpha=max(e, 1e-3) / 4, steps=10)(x, y), y)
        for e in (0.0, 2 / 255, 4 / 255, 8 / 255, 16 / 255)
    ]
    assert accs[0] == accuracy(model, x, y)
    assert all(a >= b for a, b in zip(accs, accs[1:], strict=False)), accs
    assert accs[-1] < accs[0]


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("fgsm", {"eps": 16 / 255}),
        ("bim", {"eps": 16 / 255, "alpha": 4 / 255}),
        ("pgd", {"eps": 16 / 255, "alpha": 4 / 255}),
        ("mim", {"eps": 16 / 255, "alpha": 4 / 255}),
        ("apgd", {"eps": 16 / 255, "steps": 10, "loss": "ce"}),
        ("apgd", {"eps": 16 / 255, "steps": 10, "loss": "margin"}),
        ("square", {"eps": 16 / 255, "n_queries": 100}),
        ("cw", {"steps": 30, "binary_search_steps": 3, "lr": 0.05}),
    ],
)
def test_targeted_attacks_reach_the_target(name: str, params, three_class) -> None:
    model, x, y = three_class
    targets = (y + 1) % 3
    adv = build_attack(name, model, targeted=True, **params)(x, targets)
    with torch.no_grad():
        hit = float((model(adv).argmax(1) == targets).float().mean())
    assert hit > 1 / 3 + 0.3  # chance is 1/3


def test_square_counts_queries_per_example(three_class) -> None:
    model, x, y = three_class
    attack = Square(model, eps=EPS, n_queries=50)
    adv = attack(x, y)
    stats = attack.last_stats
    assert stats is not None
    fooled = model(adv).argmax(1) != y
    assert stats.queries.max() <= 50
    assert (stats.queries[~fooled] == 50).all()  # survivors spend the whole budget
    assert (stats.queries[fooled] < 50).all()  # successes stop early
    assert stats.as_dict()["mean_queries"] == pytest.approx(float(stats.queries.float().mean()))


def test_square_is_a_real_attack(three_class) -> None:
    model, x, y = three_class
    x, y = x[:32], y[:32]
    for norm, eps in (("linf", EPS), ("l2", 1.0)):
        acc = accuracy(model, Square(model, eps=eps, norm=norm, n_queries=100)(x, y), y)
        assert acc < accuracy(model, x, y) - 0.2, norm
    assert p_selection(0.8, 0, 100) == 0.8 and p_selection(0.8, 99, 100) < 0.8


def test_deepfool_finds_small_boundary_crossings(three_class) -> None:
    model, x, y = three_class
    attack = DeepFool(model, steps=50)
    adv = attack(x, y)
    assert accuracy(model, adv, y) == 0.0
    assert attack.last_stats is not None and attack.last_stats.queries.float().mean() < 10
    # DeepFool's L2 is smaller than what PGD-l2 needs to fool the same examples
    assert float((adv - x).flatten(1).norm(dim=1).median()) < 1.0


def test_apgd_at_least_as_strong_as_pgd(three_class) -> None:
    model, x, y = three_class
    apgd = accuracy(model, APGD(model, eps=EPS, steps=20)(x, y), y)
    pgd = accuracy(model, PGD(model, eps=EPS, alpha=EPS / 4, steps=20)(x, y), y)
    assert apgd <= pgd + 1 / 64
    assert checkpoints(100)[:3] == [0, 22, 41]


@pytest.mark.parametrize("which", ["binary", "three_class"])
def test_autoattack_lite_worst_case(which: str, request) -> None:
    model, x, y = request.getfixturevalue(which)
    eps = 6 / 255
    ensemble = AutoAttackLite(model, eps=eps, steps=10, n_queries=50)
    aa_acc = accuracy(model, ensemble(x, y), y)
    ce_acc = accuracy(model, APGD(model, eps=eps, steps=10, loss="ce")(x, y), y)
    assert aa_acc <= ce_acc  # APGD-CE is its first component, run identically
    stats = ensemble.last_stats
    assert stats is not None
    fooled = sum(v for k, v in stats.details.items() if k.startswith("fooled_by_"))
    clean_correct = accuracy(model, x, y) * x.shape[0]
    assert fooled == pytest.approx(clean_correct - aa_acc * x.shape[0])


def test_uap_fit_then_apply(three_class) -> None:
    model, x, y = three_class
    uap = UAP(model, eps=16 / 255, epochs=5, batch_size=16).fit(x, y)
    assert uap.perturbation is not None and uap.perturbation.shape == x.shape[1:]
    assert float(uap.perturbation.abs().max()) <= 16 / 255 + 1e-6
    assert uap.fooling_rate is not None and uap.fooling_rate > 0.3
    adv = uap(x, y)
    assert torch.allclose(adv, (x + uap.perturbation).clamp(0, 1))
    assert uap.fooling_rate_on(x) == pytest.approx(uap.fooling_rate)
    with pytest.raises(ValueError, match="fitted on images shaped"):
        uap(x[:, :, :14, :14], y)


def test_transfer_evaluate(three_class, binary) -> None:
    surrogate, x, y = three_class
    victim = trained_model(3, seed=1)[0]
    out = transfer_evaluate(PGD(surrogate, eps=16 / 255, alpha=4 / 255), victim, x, y)
    assert set(out) == {
        "surrogate_clean_acc",
        "surrogate_robust_acc",
        "victim_clean_acc",
        "victim_robust_acc",
        "transfer_success_rate",
        "mean_l2",
        "mean_linf",
    }
    assert out["surrogate_robust_acc"] < out["surrogate_clean_acc"]
    assert out["victim_robust_acc"] <= out["victim_clean_acc"]
    assert 0.0 <= out["transfer_success_rate"] <= 1.0
    assert out["mean_linf"] <= 16 / 255 + 1e-6


def test_misclassified_examples_are_left_alone_by_minimal_attacks(three_class) -> None:
    model, x, y = three_class
    wrong = (y + 1) % 3  # every "true" label is wrong: nothing to do
    for attack in (DeepFool(model), Square(model, n_queries=10)):
        adv = attack(x, wrong)
        assert torch.equal(adv, x)
        assert attack.last_stats is not None and (attack.last_stats.queries == 1).all()


class _SegmentationPGD(PGD):
    """The extension point a segmentation attack uses: dense labels, dense logits."""

    def check_label_shape(self, labels: torch.Tensor, images: torch.Tensor) -> None:
        assert labels.shape == (images.shape[0], *images.shape[2:])

    def check_output(self, logits: torch.Tensor, images: torch.Tensor) -> int:
        assert logits.dim() == 4 and logits.shape[0] == images.shape[0]
        return int(logits.shape[1])

    def is_adversarial(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return (logits.argmax(1) == labels).float().flatten(1).mean(1) < 0.5


def _pixel_ce(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(logits, masks, reduction="none").flatten(1).mean(1)


def test_loss_hook_reuses_pgd_for_segmentation() -> None:
    torch.manual_seed(0)
    model = SegmentationModel(2).eval()
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        masks = model(x).argmax(1)  # the model's own segmentation: pixel accuracy 1
    attack = _SegmentationPGD(model, eps=16 / 255, alpha=4 / 255, loss_fn=_pixel_ce)
    adv = attack(x, masks)
    with torch.no_grad():
        pixel_acc = (model(adv).argmax(1) == masks).float().mean()
    assert float((adv - x).abs().max()) <= 16 / 255 + 1e-6
    assert pixel_acc < 0.9


class _BrightestPixelModel(torch.nn.Module):
    """Class 1 iff some pixel exceeds 0.9: exactly what a one-pixel attack can exploit."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = 20 * (x.flatten(1).amax(1) - 0.9)
        return torch.stack([torch.zeros_like(z), z], dim=1)


def test_one_pixel_attack_finds_the_pixel() -> None:
    model = _BrightestPixelModel()
    x = torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 0.8
    y = torch.zeros(16, dtype=torch.long)
    attack = OnePixel(model, pixels=1, population=16, steps=30)
    adv = attack(x, y)
    assert (model(adv).argmax(1) == 1).all()
    changed = (adv != x).flatten(1).sum(1)
    assert (changed == 1).all()
    assert attack.last_stats is not None
    assert attack.last_stats.queries.max() <= 1 + 16 * 31
