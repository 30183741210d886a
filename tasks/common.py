"""Tasks shared by every flow: config and data loading."""

from __future__ import annotations

from prefect import task

from medsec.config import MedSecConfig, load_config
from medsec.data.registry import load_dataset
from medsec.data.types import LoadedDataset


@task(name="load-config")
def load_config_task(
    config: str | None = None, preset: str | None = None, overrides: list[str] | None = None
) -> MedSecConfig:
    return load_config(config, preset, tuple(overrides or ()))


@task(name="load-dataset")
def load_dataset_task(cfg: MedSecConfig) -> LoadedDataset:
    return load_dataset(cfg.dataset.name, cfg.dataset.data_dir)
