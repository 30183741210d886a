"""Labels of the privacy-utility sweep's models (the ``medsec.privacy`` MLflow tag).

The sweep's per-point configs are built by :func:`medsec.stages.privacy.sweep_points`.
"""

from __future__ import annotations

from typing import Any


def privacy_label(target_epsilon: float | None) -> str:
    """``none`` for non-private training, else ``dp-eps<target>`` (e.g. ``dp-eps1``)."""
    return "none" if target_epsilon is None else f"dp-eps{target_epsilon:g}"


def record_label(record: dict[str, Any] | None) -> str:
    """The label of a trained model from its ``meta["privacy"]`` record."""
    if not record or record.get("mechanism") != "dp-sgd":
        return "none"
    target = record.get("target_epsilon")
    return privacy_label(float(target)) if target is not None else "dp-sgd"
