"""Data-validation task (Great Expectations via ``medsec.data.validation``)."""

from __future__ import annotations

from prefect import task

from medsec.config import MedSecConfig
from medsec.data.types import LoadedDataset
from medsec.data.validation import ValidationReport, validate_dataset


@task(name="validate-dataset")
def validate_task(cfg: MedSecConfig, data: LoadedDataset) -> ValidationReport:
    return validate_dataset(
        data, num_classes=data.num_classes, expected_shape=data.image_shape,
        min_class_fraction=cfg.validation.min_class_fraction,
    )
