"""The privacy-utility sweep: one validated config per point.

Points: the non-private baseline (``privacy.sweep_baseline``) and DP-SGD at each target
epsilon of ``privacy.sweep``. Every point uses the same seed, data, training settings (with
``privacy.epochs`` replacing ``train.epochs`` when set) and
network, built with GroupNorm (``model.norm=group``: DP-compatible, so the baseline differs from
the DP models only by DP-SGD). Model selection is the same for all points: the best validation
epoch only with ``train.select_best`` AND ``privacy.dp.val_is_public``, else the last epoch.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from medsec.config import MedSecConfig, config_from_dict, config_to_dict


@dataclass(frozen=True)
class SweepPoint:
    """``label``: the ``medsec.privacy`` tag (``none``, ``dp-eps8``); ``cfg``: its config."""

    label: str
    target_epsilon: float | None
    cfg: MedSecConfig


def privacy_label(target_epsilon: float | None) -> str:
    """``none`` for non-private training, else ``dp-eps<target>`` (e.g. ``dp-eps1``)."""
    return "none" if target_epsilon is None else f"dp-eps{target_epsilon:g}"


def record_label(record: dict[str, Any] | None) -> str:
    """The label of a trained model from its ``meta["privacy"]`` record."""
    if not record or record.get("mechanism") != "dp-sgd":
        return "none"
    target = record.get("target_epsilon")
    return privacy_label(float(target)) if target is not None else "dp-sgd"


def sweep_points(cfg: MedSecConfig) -> list[SweepPoint]:
    """The configs of the sweep, baseline first, then ascending target epsilon."""
    base = config_to_dict(cfg)
    base["model"]["norm"] = "group"
    base["train"]["select_best"] = cfg.train.select_best and cfg.privacy.dp.val_is_public
    base["train"]["epochs"] = cfg.privacy.epochs or cfg.train.epochs
    targets: list[float | None] = [None] if cfg.privacy.sweep_baseline else []
    targets += list(cfg.privacy.sweep)
    points = []
    for target in targets:
        data = copy.deepcopy(base)
        dp = data["privacy"]["dp"]
        if target is None:
            dp["enabled"] = False
        else:
            dp |= {"enabled": True, "target_epsilon": target, "noise_multiplier": None}
        label = privacy_label(target)
        points.append(SweepPoint(label, target,
                                 config_from_dict(data, source=f"privacy sweep point {label}")))
    return points
