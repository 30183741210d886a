"""Config -> data-stage settings: which dataset, from where, generated how."""

from __future__ import annotations

import dataclasses

from medsec.config import MedSecConfig
from medsec.data.phantoms import PHANTOM_NAME, PhantomSpec
from medsec.data.prepare import DataSource


def data_source(cfg: MedSecConfig) -> DataSource:
    """The ``dataset`` and ``phantoms`` sections as the data package's :class:`DataSource`."""
    return DataSource(cfg.dataset.name, cfg.dataset.data_dir,
                      PhantomSpec(**cfg.phantoms.model_dump()))


def phantom_source(cfg: MedSecConfig) -> DataSource:
    """The phantoms (they carry lesion masks) whatever ``dataset.name`` is: what the 2D
    segmentation stage (``segmentation.data: phantoms``) reads."""
    return dataclasses.replace(data_source(cfg), name=PHANTOM_NAME)
