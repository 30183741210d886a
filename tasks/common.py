"""Tasks shared by every flow: config and data loading."""

from __future__ import annotations

import tempfile
from pathlib import Path

from prefect import task

from medsec.config import MedSecConfig, load_config
from medsec.data.prepare import load_prepared, prepare_dataset
from medsec.data.types import LoadedDataset
from medsec.stages.data import data_source, phantom_source
from medsec.stages.pipeline import PREPARED_DIR
from medsec.training.config import use_hardware


@task(name="load-config")
def load_config_task(
    config: str | None = None, preset: str | None = None, overrides: list[str] | None = None
) -> MedSecConfig:
    cfg = load_config(config, preset, tuple(overrides or ()))
    use_hardware(cfg.train.hardware())  # train.accelerator/precision: every fit and load
    return cfg


@task(name="prepare-dataset")
def prepare_dataset_task(cfg: MedSecConfig, prepared: str | Path = PREPARED_DIR) -> LoadedDataset:
    """The data stage: (re)write ``prepared/`` from the raw source and the params."""
    return prepare_dataset(data_source(cfg), prepared)


@task(name="load-dataset")
def load_dataset_task(cfg: MedSecConfig, prepared: str | Path = PREPARED_DIR) -> LoadedDataset:
    """The dataset in ``prepared/``, prepared first when missing or made for other params."""
    return load_prepared(data_source(cfg), prepared)


@task(name="load-phantoms")
def load_phantoms_task(cfg: MedSecConfig, prepared: str | Path = PREPARED_DIR) -> LoadedDataset:
    """The phantoms (with masks) whatever ``dataset.name`` is: from ``prepared/`` when the
    dataset is the phantoms, else generated from ``phantoms`` in a temporary directory
    (``prepared/`` holds the configured dataset and belongs to the data stage)."""
    source = phantom_source(cfg)
    if cfg.dataset.name == source.name:
        return load_prepared(source, prepared)
    with tempfile.TemporaryDirectory() as tmp:
        return prepare_dataset(source, Path(tmp) / "phantoms")
