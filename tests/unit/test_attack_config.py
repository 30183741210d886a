"""The ``attack:`` config section: specs checked against the attack registry at load time,
errors naming the field, epsilons as numbers or fractions."""

from __future__ import annotations

import subprocess
import sys

import pytest

from medsec.attacks.config import AttackConfig, grey_levels, parse_epsilon
from medsec.config import PRESET_DIR, config_from_dict, load_config
from medsec.errors import ConfigError

PARAMS_YAML = PRESET_DIR.parent.parent / "params.yaml"


def _attack(**section) -> AttackConfig:
    return config_from_dict({"attack": section}).attack


def _specs(*specs: dict) -> AttackConfig:
    return _attack(attacks=list(specs))


@pytest.mark.parametrize(
    ("specs", "field", "match"),
    [
        (
            [
                {"name": "fgsm", "eps": [0.1]},
                {"name": "pgd", "eps": [0.1]},
                {"name": "pgdd", "eps": [0.1]},
            ],
            "attack.attacks.2.name",
            "unknown attack 'pgdd'; known attacks: apgd",
        ),
        (
            [{"name": "pgd", "eps": [0.1], "params": {"stepz": 3}}],
            "attack.attacks.0.params",
            "unknown parameter.*'pgd': stepz; accepted: alpha, steps",
        ),
        (
            [{"name": "pgd", "eps": [0.1], "params": {"steps": 0}}],
            "attack.attacks.0.params",
            "steps must be > 0",
        ),
        (
            [{"name": "square", "eps": [0.1], "params": {"p_init": "big"}}],
            "attack.attacks.0.params",
            "wrong type",
        ),
        (
            [{"name": "pgd", "eps": [0.1], "params": {"eps": 0.2}}],
            "attack.attacks.0.params",
            "'eps' cannot be set here",
        ),
        (
            [{"name": "apgd", "eps": [0.1], "params": {"loss_fn": "x"}}],
            "attack.attacks.0.params",
            "callable cannot come from YAML",
        ),
        (
            [{"name": "pgd", "eps": [2 / 255, 8]}],
            "attack.attacks.0.eps",
            r"item 1: eps=8.0 exceeds 1 for the linf norm.*8/255, not 8",
        ),
        ([{"name": "pgd", "eps": ["8/0"]}], "attack.attacks.0.eps.0", "cannot read epsilon"),
        ([{"name": "pgd", "eps": [-0.1]}], "attack.attacks.0.eps.0", ">= 0"),
        ([{"name": "pgd", "eps": [True]}], "attack.attacks.0.eps.0", "number or a fraction"),
        ([{"name": "fgsm"}], "attack.attacks.0.eps", "fgsm needs at least one epsilon"),
        ([{"name": "one_pixel", "eps": [0.1]}], "attack.attacks.0.eps", "one_pixel has no epsilon"),
        (
            [{"name": "pgd", "eps": [0.001, 0.0012]}],
            "attack.attacks.0.eps",
            "not distinct in grey levels",
        ),
        (
            [{"name": "deepfool", "targeted": True}],
            "attack.attacks.0.targeted",
            "deepfool has no targeted mode",
        ),
        (
            [{"name": "pgd", "eps": [0.1]}, {"name": "pgd", "eps": [0.2]}],
            "attack.attacks",
            "item 1: 'pgd' already used by item 0.*distinct `label`",
        ),
        (
            [{"name": "pgd", "eps": [0.1], "label": "PGD-2"}],
            "attack.attacks.0.label",
            "lower_snake_case",
        ),
        ([{"name": "pgd", "eps": [0.1], "label": "worst_case"}], "attack.attacks", "reserved"),
    ],
)
def test_bad_specs_name_the_field(specs, field: str, match: str) -> None:
    with pytest.raises(ConfigError, match=rf"{field}: Value error, .*{match}"):
        _specs(*specs)


def test_epsilons_as_fractions_and_l2_budgets() -> None:
    cfg = _specs(
        {"name": "pgd", "eps": ["2/255", " 8 / 255 ", 0.1], "params": {"alpha": "1/255"}},
        {"name": "pgd", "label": "pgd_l2", "eps": [0.5, 3.0], "params": {"norm": "l2"}},
        {"name": "deepfool"},
        {"name": "one_pixel", "params": {"pixels": 2}},
        {"name": "cw", "eps": [3.0]},  # an L2 cap: above 1 is fine (C&W is L2, not linf)
    )
    pgd = cfg.attacks[0]
    assert pgd.eps == pytest.approx((2 / 255, 8 / 255, 0.1))
    assert pgd.params["alpha"] == pytest.approx(1 / 255)
    assert cfg.attacks[1].id == "pgd_l2" and cfg.attacks[2].eps == ()  # unbounded DeepFool
    assert [grey_levels(e) for e in pgd.eps] == [2, 8, 26]
    assert parse_epsilon("0.5/255") == pytest.approx(0.5 / 255)


def test_transfer_refers_to_configured_attacks() -> None:
    with pytest.raises(ConfigError, match=r"attack: .*transfer.attacks.0: 'fgsm' is not one"):
        _attack(attacks=[{"name": "pgd", "eps": [0.1]}], transfer={"attacks": ["fgsm"]})
    with pytest.raises(ConfigError, match=r"transfer.attacks.0: 'uap' cannot be transferred"):
        _attack(attacks=[{"name": "uap", "eps": [0.1]}], transfer={"attacks": ["uap"]})
    with pytest.raises(ConfigError, match=r"attack.transfer.surrogate.model: .*unknown model"):
        _attack(transfer={"surrogate": {"model": "vgg99"}})


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("attack.n_examples=0", "attack.n_examples"),
        ("attack.image_scaling.mode=lanczos", "attack.image_scaling.mode"),
        ("attack.bogus=1", "attack.bogus"),
    ],
)
def test_section_fields_are_checked(override: str, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        load_config(overrides=[override])


def test_defaults_params_yaml_and_presets_are_valid() -> None:
    default = AttackConfig()
    revalidated = AttackConfig.model_validate(default.model_dump())  # defaults skip validation
    assert revalidated == default
    assert {s.name for s in default.attacks} >= {
        "fgsm",
        "pgd",
        "deepfool",
        "square",
        "autoattack_lite",
    }
    params = load_config(PARAMS_YAML).attack
    assert params.transfer is not None and params.n_examples == 128
    full = load_config(preset="attack_pneumoniamnist").attack
    from medsec.attacks.registry import ATTACKS

    assert {s.name for s in full.attacks} == set(ATTACKS)  # the full suite: every attack


def test_config_import_stays_light() -> None:
    code = "import sys, medsec.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("source", ["params.yaml", "pneumoniamnist"])
def test_linf_suites_cover_every_robustness_column_of_the_report(source) -> None:
    """The report's Rob L∞ columns (1, 2, 4, 8 /255) are per-example worst cases over the
    L∞ ensemble: each of its attacks must run at every one of those budgets (uap is a single
    universal perturbation at 8/255, not part of the per-budget ensemble)."""
    from medsec.report.leaderboard import LINF

    cfg = load_config(PARAMS_YAML) if source == "params.yaml" else load_config(preset=source)
    ensemble = [s for s in cfg.attack.attacks
                if s.params.get("norm", "linf") == "linf" and s.name != "uap"]
    assert {s.name for s in ensemble} >= {"fgsm", "pgd", "deepfool", "square",
                                          "autoattack_lite"}
    for spec in ensemble:
        assert {grey_levels(e) for e in spec.eps} >= set(LINF), spec.id
