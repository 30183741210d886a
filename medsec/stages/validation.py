"""Config -> data validation: the ``validation`` section's soft thresholds and stop rule."""

from __future__ import annotations

from medsec.config import MedSecConfig
from medsec.data.types import LoadedDataset
from medsec.data.validation import ValidationReport, raise_if_failed, validate_dataset
from medsec.errors import ValidationFailed


def validate(cfg: MedSecConfig, data: LoadedDataset) -> ValidationReport:
    """The Great Expectations report of ``data`` (its classes and image shape; the class
    balance threshold ``validation.min_class_fraction``)."""
    return validate_dataset(data, num_classes=data.num_classes, expected_shape=data.image_shape,
                            min_class_fraction=cfg.validation.min_class_fraction,
                            near_duplicate_distance=cfg.validation.near_duplicate_distance)


def enforce(cfg: MedSecConfig, report: ValidationReport) -> None:
    """Raise :class:`ValidationFailed` on hard failures, and on warnings when
    ``validation.fail_on_warnings`` is set."""
    raise_if_failed(report)
    if cfg.validation.fail_on_warnings and report.warnings:
        raise ValidationFailed("validation.fail_on_warnings is set and the data has warnings:\n  "
                               + "\n  ".join(report.warnings))
