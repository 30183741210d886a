"""The ``defense:`` config section: defaults, clear errors naming the field, and the builder's
refusal of incompatible models."""

from __future__ import annotations

import pytest

from medsec.config import PRESET_DIR, load_config
from medsec.data.registry import load_dataset
from medsec.defenses.base import DefenseError
from medsec.defenses.build import BUILDERS, build_defense
from medsec.defenses.config import DEFENSE_KINDS, DEFENSE_PARAMS, DefenseConfig, DefenseSpec
from medsec.errors import ConfigError
from medsec.stages import defense as stage
from tests.unit.attack_fixtures import SegmentationModel


def test_defaults_are_valid_and_complete() -> None:
    cfg = DefenseConfig()
    assert [s.name for s in cfg.defenses] == ["fast_fgsm_at", "bit_depth", "jpeg", "mahalanobis",
                                              "smoothing"]
    assert set(DEFENSE_PARAMS) == set(DEFENSE_KINDS) == set(BUILDERS)
    spec = DefenseSpec(name="pgd_at", params={"eps": "2/255"})
    assert spec.params["eps"] == pytest.approx(2 / 255) and spec.params["steps"] == 7
    assert spec.key == "pgd_at" and spec.kind == "training"
    preset = load_config(preset="defense_pneumoniamnist").defense
    assert preset.eval.radii == (0.1, 0.25, 0.5)
    assert load_config(PRESET_DIR.parent.parent / "params.yaml").defense.eval.max_examples


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("defense.defenses=[{name: jpg}]", "defense.defenses.0: Value error, name: unknown "
                                           "defense 'jpg'"),
        ("defense.defenses=[{name: jpeg, params: {qualty: 50}}]", "params.qualty: unknown "
                                                                  "parameter"),
        ("defense.defenses=[{name: jpeg, params: {quality: 0}}]", "params.quality"),
        ("defense.defenses=[{name: pgd_at, params: {eps: 8}}]", "params.eps"),
        ("defense.defenses=[jpeg, jpeg]", "labels must be unique"),
        ("defense.defenses=[{name: jpeg, label: undefended}]", "reserved"),
        ("defense.eval.eps=0", "defense.eval.eps"),
        ("defense.eval.radii=[-1]", "defense.eval.radii"),
        ("defense.eval.detection_attacks=[cw]", "defense.eval.detection_attacks.0"),
        ("defense.evaluation.eps=0.1", "defense.evaluation: unknown key"),
    ],
)
def test_bad_defense_config_names_the_field(override: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    assert needle in str(info.value)


def test_incompatible_model_is_a_clear_error(phantom_dir) -> None:
    cfg = load_config(overrides=[f"dataset.data_dir={phantom_dir}"])
    data = load_dataset("phantoms", phantom_dir)
    ctx = stage.context(cfg, data, SegmentationModel())
    with pytest.raises(DefenseError, match="defense 'smoothing' needs a classifier"):
        build_defense(DefenseSpec(name="smoothing"), ctx)
