"""Data-validation task (Great Expectations via ``medsec.data.validation``)."""

from __future__ import annotations

from prefect import task

from medsec.config import MedSecConfig
from medsec.data.types import LoadedDataset
from medsec.data.validation import ValidationReport
from medsec.stages import validation


@task(name="validate-dataset")
def validate_task(cfg: MedSecConfig, data: LoadedDataset) -> ValidationReport:
    return validation.validate(cfg, data)
