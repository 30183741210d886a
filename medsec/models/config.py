"""The network settings of a classifier (the ``model`` section of the config)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from medsec.config_base import StrictModel


class ModelConfig(StrictModel):
    """Network by name (see ``medsec models``); ``norm='group'`` gives DP-compatible models."""

    name: str = "small_cnn"
    norm: Literal["batch", "group", "instance"] = "batch"
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)

    @field_validator("name")
    @classmethod
    def _known_name(cls, value: str) -> str:
        from medsec.models.factory import known_model_names

        if value not in known_model_names():
            raise ValueError(f"unknown model {value!r}; known: {', '.join(known_model_names())}")
        return value
