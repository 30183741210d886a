"""Pydantic models for every YAML config, and the one loader (file + preset + overrides).

Unknown keys and invalid values raise :class:`medsec.errors.ConfigError` naming the field,
e.g. ``train.lr: Input should be greater than 0``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from medsec.attacks.config import AttackConfig
from medsec.config_base import StrictModel, one_of
from medsec.deepfakes.config import DeepfakeConfig
from medsec.defenses.config import DefenseConfig
from medsec.errors import ConfigError
from medsec.federated.config import FederatedConfig
from medsec.models.config import ModelConfig
from medsec.privacy.config import PrivacyConfig
from medsec.segmentation.config import SegmentationConfig
from medsec.training.config import TrainConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
PRESET_DIR = REPO_ROOT / "configs" / "presets"


class DatasetConfig(StrictModel):
    """Where the images come from.

    ``source: auto``: ``name`` is ``phantoms`` (the built-in synthetic dataset) or a MedMNIST 2D
    subset name such as ``pneumoniamnist``; ``data_dir`` is searched for ``<name>.npz``
    (``<name>_<image_size>.npz`` for MedMNIST+ at 64/128/224). ``source: folder`` (one
    sub-folder per class) or ``manifest`` (CSV/Parquet): your own images at ``path`` (relative
    to ``data_dir``), any ``name``. The environment variable ``MEDSEC_DATA_DIR`` overrides
    ``data_dir``. See the README section "Your own data" for the other keys.
    """

    source: Literal["auto", "folder", "manifest"] = "auto"
    name: str = "phantoms"
    data_dir: str = "data"
    max_train: int | None = Field(default=None, gt=0)
    max_eval: int | None = Field(default=None, gt=0)
    path: str | None = None
    image_size: int | None = Field(default=None, ge=8, le=1024)
    channels: int | None = Field(default=None, ge=1, le=3)
    classes: list[str] | None = None
    intensity: Literal["auto", "minmax", "window"] = "auto"
    window: tuple[float, float] | None = None
    max_pixels: int = Field(default=100_000_000, gt=0)
    memory_limit_mb: float = Field(default=2048.0, gt=0)
    val_fraction: float = Field(default=0.15, gt=0.0, lt=0.5)
    test_fraction: float = Field(default=0.15, gt=0.0, lt=0.5)

    @field_validator("name")
    @classmethod
    def _known_name(cls, name: str, info: ValidationInfo) -> str:
        if info.data.get("source", "auto") == "auto":  # own data: any name
            one_of("medsec.data.registry:known_dataset_names", "dataset").func(name)
        return name

    @model_validator(mode="after")
    def _check_source(self) -> DatasetConfig:
        if self.source != "auto" and not self.path:
            raise ValueError(f"dataset.path is required for dataset.source {self.source!r}")
        if self.intensity == "window" and self.window is None:
            raise ValueError("dataset.window [low, high] is required for intensity 'window'")
        return self


class PhantomConfig(StrictModel):
    """Size of the built-in synthetic phantom dataset (generated deterministically)."""

    n_train: int = Field(default=800, gt=0)
    n_val: int = Field(default=200, gt=0)
    n_test: int = Field(default=200, gt=0)
    size: int = Field(default=32, ge=16, le=256)
    seed: int = 0


class ValidationConfig(StrictModel):
    """Soft thresholds of the data-validation stage (hard ones are not configurable)."""

    min_class_fraction: float = Field(default=0.1, ge=0.0, le=0.5)
    fail_on_warnings: bool = False
    near_duplicate_distance: int | None = Field(default=4, ge=0, le=32)
    """Own data: images whose 64-bit perceptual hashes differ in at most this many bits are
    near-duplicates, and one in two splits fails validation (None: not checked)."""


class TrackingConfig(StrictModel):
    experiment: str = "medsec"
    tracking_uri: str | None = None


class RunnerConfig(StrictModel):
    """Where the sweeps' mapped tasks (attacks, defenses, DP epsilons) run.

    ``local``: in this process (Prefect's thread pool, as a flow does by default). ``dask``:
    prefect-dask's ``DaskTaskRunner``, on the scheduler at ``address`` (``tcp://host:port``)
    or, without one, on a new ``LocalCluster`` of ``n_workers`` single-threaded processes.
    ``retries``: how often a failed task (e.g. its worker died) is run again.
    """

    kind: Literal["local", "dask"] = "local"
    address: str | None = Field(default=None, pattern=r"^(tcp|tls)://[^\s/:]+:\d+$")
    n_workers: int = Field(default=2, ge=1, le=64)
    retries: int = Field(default=2, ge=0, le=10)


class MedSecConfig(StrictModel):
    """The whole pipeline configuration (the schema of ``params.yaml`` and the presets)."""

    preset: str = "default"
    seed: int = 0
    dataset: DatasetConfig = DatasetConfig()
    phantoms: PhantomConfig = PhantomConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    validation: ValidationConfig = ValidationConfig()
    tracking: TrackingConfig = TrackingConfig()
    runner: RunnerConfig = RunnerConfig()
    federated: FederatedConfig = FederatedConfig()
    deepfake: DeepfakeConfig = DeepfakeConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    attack: AttackConfig = AttackConfig()
    defense: DefenseConfig = DefenseConfig()
    segmentation: SegmentationConfig = SegmentationConfig()


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _deep_merge(out[key], value) if both else value
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must contain a mapping at the top level")
    return data


def _parse_override(item: str) -> dict[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like 'section.key=value'")
    key, raw = item.split("=", 1)
    node: Any = yaml.safe_load(raw) if raw != "" else None
    for part in reversed(key.strip().split(".")):
        node = {part: node}
    return node


def preset_path(name: str) -> Path:
    """Path of a named preset in ``configs/presets``; unknown names list the known ones."""
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
        raise ConfigError(f"unknown preset {name!r}; known: {', '.join(known)}")
    return path


def load_config(path: str | Path | None = None, preset: str | None = None,
                overrides: list[str] | tuple[str, ...] = ()) -> MedSecConfig:
    """Build a validated config: defaults < preset < file < dotted overrides."""
    data: dict[str, Any] = {}
    sources = ["defaults"]
    if preset is not None:
        data = _deep_merge(data, _read_yaml(preset_path(preset)))
        data.setdefault("preset", preset)
        sources.append(f"preset {preset}")
    if path is not None:
        data = _deep_merge(data, _read_yaml(Path(path)))
        sources.append(str(path))
    for item in overrides:
        data = _deep_merge(data, _parse_override(item))
        sources.append(f"override {item}")
    return config_from_dict(data, source=" < ".join(sources))


def config_from_dict(data: dict[str, Any], source: str = "dict") -> MedSecConfig:
    try:
        return MedSecConfig.model_validate(data)
    except ValidationError as exc:
        lines = [f"{'.'.join(str(p) for p in item['loc']) or '<root>'}: "
                 + ("unknown key" if item["type"] == "extra_forbidden" else item["msg"])
                 for item in exc.errors()]
        raise ConfigError(f"invalid config ({source}):\n  " + "\n  ".join(lines)) from None


def config_to_dict(cfg: MedSecConfig) -> dict[str, Any]:
    """Plain-python (JSON/YAML safe) dict of a config."""
    return cfg.model_dump(mode="json")


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{'a': {'b': 1}} -> {'a.b': 1}`` (for logging params)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        out |= (flatten(value, prefix=f"{prefix}{key}.") if isinstance(value, dict)
                else {f"{prefix}{key}": value})
    return out
