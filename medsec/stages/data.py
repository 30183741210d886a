"""Config -> data-stage settings: which dataset, from where, generated how."""

from __future__ import annotations

from medsec.config import MedSecConfig
from medsec.data.phantoms import PhantomSpec
from medsec.data.prepare import DataSource


def data_source(cfg: MedSecConfig) -> DataSource:
    """The ``dataset`` and ``phantoms`` sections as the data package's :class:`DataSource`."""
    return DataSource(cfg.dataset.name, cfg.dataset.data_dir,
                      PhantomSpec(**cfg.phantoms.model_dump()))
