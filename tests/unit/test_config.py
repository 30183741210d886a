import pytest

from medsec.config import PRESET_DIR, load_config
from medsec.errors import ConfigError


def test_defaults_and_overrides():
    cfg = load_config(overrides=["train.epochs=3", "model.norm=group", "dataset.max_train=10"])
    assert cfg.train.epochs == 3
    assert cfg.model.norm == "group"
    assert cfg.dataset.max_train == 10


@pytest.mark.parametrize("preset", sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
def test_every_preset_is_valid(preset):
    assert load_config(preset=preset).preset == preset


def test_params_yaml_is_valid():
    cfg = load_config(PRESET_DIR.parent.parent / "params.yaml")
    assert cfg.dataset.name == "phantoms"


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("train.lr=-0.1", "train.lr"),
        ("train.epochs=0", "train.epochs"),
        ("model.name=vgg99", "model.name"),
        ("dataset.name=imagenet", "dataset.name"),
        ("train.learning_rate=0.1", "train.learning_rate"),
        ("nonsense=1", "nonsense"),
        ("model.norm=layer", "model.norm"),
    ],
)
def test_bad_values_name_the_field(override, field):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    assert field in str(info.value)


def test_unknown_key_in_file_is_an_error(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("train:\n  epochs: 2\n  epoch: 3\n")
    with pytest.raises(ConfigError, match=r"train\.epoch: unknown key"):
        load_config(path)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config(preset="nope")
