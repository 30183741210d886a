"""Quiet contexts for audits that train and score many models (no banner or warning storms)."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def resolution_warnings_once() -> Iterator[None]:
    """``mia_metrics`` warns on every call when there are too few non-members for a low-FPR
    target; an audit calls it per attack (and per figure line): keep the first of each
    (message template, args after the first)."""
    logger = logging.getLogger("medsec.metrics.privacy")
    seen: set[tuple] = set()

    def only_first(record: logging.LogRecord) -> bool:
        key = (record.msg, tuple(record.args or ())[1:])
        new = key not in seen
        seen.add(key)
        return new

    logger.addFilter(only_first)
    try:
        yield
    finally:
        logger.removeFilter(only_first)


@contextmanager
def quiet_training() -> Iterator[None]:
    """Silence Lightning's per-fit banners and Opacus' per-run warnings (an audit trains
    many models)."""
    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
