"""The network settings of a classifier (the ``model`` section of the config)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from medsec.config_base import KnownModel, StrictModel


class ModelConfig(StrictModel):
    """Network by name (see ``medsec models``); ``norm='group'`` gives DP-compatible models."""

    name: KnownModel = "small_cnn"
    norm: Literal["batch", "group", "instance"] = "batch"
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
