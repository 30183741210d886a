"""Config -> segmentation calls that need sections beside ``segmentation``."""

from __future__ import annotations

from medsec.config import MedSecConfig
from medsec.data.validation import ValidationReport
from medsec.segmentation.data import SegData
from medsec.segmentation.job import validate_seg_data


def validate(cfg: MedSecConfig, data: SegData) -> ValidationReport:
    """Great Expectations on images and masks (``segmentation.max_foreground_fraction``) with
    ``validation.min_class_fraction``."""
    return validate_seg_data(data, cfg.segmentation, cfg.validation.min_class_fraction)
