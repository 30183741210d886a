"""The base of every config section: unknown keys are errors, values are frozen."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Pydantic model that forbids unknown keys (a typo names the field) and is immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)
