"""The base of every config section: unknown keys are errors, values are frozen."""

from __future__ import annotations

import importlib
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Pydantic model that forbids unknown keys (a typo names the field) and is immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def one_of(names: str, what: str) -> AfterValidator:
    """Validator: the value is one of ``names()``, a ``"module:function"`` imported on first use
    (the config stays torch-free); else ValueError ``unknown <what> 'x'; known: a, b``."""

    def check(value: str) -> str:
        module, func = names.split(":")
        known = getattr(importlib.import_module(module), func)()
        if value not in known:
            raise ValueError(f"unknown {what} {value!r}; known: {', '.join(known)}")
        return value

    return AfterValidator(check)


KnownModel = Annotated[str, one_of("medsec.models.factory:known_model_names", "model")]
"""A classifier network name (``medsec models``)."""
