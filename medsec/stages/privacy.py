"""Config -> privacy: the privacy-utility sweep's configs, the audit's data sets and the audit.

Sweep points: the non-private baseline (``privacy.sweep_baseline``) and DP-SGD at each target
epsilon of ``privacy.sweep``. Every point uses the same seed, data, training settings (with
``privacy.epochs`` replacing ``train.epochs`` when set) and network, built with GroupNorm
(``model.norm=group``: DP-compatible, so the baseline differs from the DP models only by
DP-SGD and its normalisation: the training split's statistics, where DP models use fixed ones,
mean 0.5 and std 0.5). Model selection is the same for all points: the best validation epoch
only with ``train.select_best`` AND ``privacy.dp.val_is_public``, else the last epoch.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from medsec.config import MedSecConfig, config_from_dict, config_to_dict
from medsec.data.types import LoadedDataset
from medsec.privacy.sweep import privacy_label
from medsec.stages import classifier

if TYPE_CHECKING:  # the audit imports sklearn/Opacus: only when it runs
    from torch import nn

    from medsec.privacy.audit import AuditResult
    from medsec.privacy.audit_sets import AuditData
    from medsec.privacy.canary_audit import CanaryAudit


@dataclass(frozen=True)
class SweepPoint:
    """``label``: the ``medsec.privacy`` tag (``none``, ``dp-eps8``); ``cfg``: its config."""

    label: str
    target_epsilon: float | None
    cfg: MedSecConfig


def sweep_points(cfg: MedSecConfig) -> list[SweepPoint]:
    """The configs of the sweep, baseline first, then ascending target epsilon."""
    base = config_to_dict(cfg)
    base["model"]["norm"] = "group"
    base["train"]["select_best"] = _sweep_selects_on_val(cfg)
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


def _sweep_selects_on_val(cfg: MedSecConfig) -> bool:
    return cfg.train.select_best and cfg.privacy.dp.val_is_public


def audit_sets(cfg: MedSecConfig, data: LoadedDataset,
               meta: dict[str, Any] | None = None) -> AuditData:
    """The audit's disjoint data sets (``privacy.audit``) for the checkpoint of ``meta`` (its
    ``selection``: non-members never include the split that selected it), or with ``meta``
    None for the sweep's models."""
    from medsec.privacy.audit_sets import audit_data_for
    from medsec.training.job import BEST_VAL, LAST_EPOCH

    selection = meta.get("selection") if meta is not None else (
        BEST_VAL if _sweep_selects_on_val(cfg) else LAST_EPOCH)
    return audit_data_for(cfg.privacy.audit, classifier.recipe(cfg), data, selection)


def audit(cfg: MedSecConfig, model: nn.Module, meta: dict[str, Any], data: LoadedDataset,
          sets: AuditData | None = None) -> AuditResult:
    """Audit ``model`` (checkpoint ``meta``) with ``privacy.audit``; shadow/reference models
    train like ``cfg`` with the model's own network and DP noise."""
    from medsec.privacy.audit import audit_model

    return audit_model(model, meta, cfg.privacy.audit, classifier.recipe(cfg), cfg.privacy.dp,
                       data, sets)


def canary_audit(cfg: MedSecConfig, data: LoadedDataset) -> CanaryAudit | None:
    """One-run DP audit (``privacy.canary``, None when disabled) of ``cfg``'s classifier
    recipe: one extra training run, with its DP settings when ``privacy.dp.enabled`` (a sweep
    point's config), ``privacy.canary.num_canaries`` gradient canaries in the network."""
    canary = cfg.privacy.canary
    if not canary.enabled:
        return None
    from medsec.privacy.canary_audit import audit_classifier_run

    recipe = classifier.recipe(cfg)
    if canary.epochs is not None:
        recipe = recipe.derive(epochs=canary.epochs)
    dp = cfg.privacy.dp if cfg.privacy.dp.enabled else None
    return audit_classifier_run(recipe, data, dp, canary.num_canaries, canary.guesses,
                                canary.confidence, canary.seed)
