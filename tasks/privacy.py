"""Privacy tasks: the audit's data sets, the audit, and what they log to MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from medsec.config import MedSecConfig
from medsec.data.types import LoadedDataset
from medsec.stages import privacy as stage
from tasks.tracking import log_dict, log_figure, log_metrics, log_params, set_tags

if TYPE_CHECKING:  # the audit imports sklearn/Opacus: only when a privacy flow runs
    from torch import nn

    from medsec.privacy.audit import AuditResult
    from medsec.privacy.audit_sets import AuditData
    from medsec.privacy.canary_audit import CanaryAudit


@task(name="privacy-audit-data", cache_policy=NO_CACHE)
def audit_data_task(cfg: MedSecConfig, data: LoadedDataset,
                    meta: dict[str, Any] | None = None) -> AuditData:
    return stage.audit_sets(cfg, data, meta)


@task(name="privacy-audit", cache_policy=NO_CACHE)
def audit_task(model: nn.Module, meta: dict[str, Any], cfg: MedSecConfig, data: LoadedDataset,
               sets: AuditData) -> AuditResult:
    return stage.audit(cfg, model, meta, data, sets)


def log_dp_record(record: dict[str, Any]) -> dict[str, float]:
    """A DP run's final numbers as metrics (``epsilon``, ``dp_*``) and params (``dp_*``: also
    the accountant and the model selection), the tag ``medsec.dp_noise`` (``seeded`` /
    ``secure``), the whole record as ``privacy/dp.json``; returns the metrics (empty when
    non-private)."""
    from medsec.privacy.plan import dp_metrics

    metrics = dp_metrics(record)
    if metrics:  # at the last epoch's step, where the per-epoch epsilon curve ends
        log_metrics(metrics, step=max(len(record.get("epsilon_per_epoch", [])) - 1, 0))
        log_params({f"dp_{k}": v for k, v in record.items()
                    if k not in ("mechanism", "epsilon", "epsilon_per_epoch")})
        log_dict(record, "privacy/dp.json")
        set_tags({"medsec.dp_noise": record.get("noise", "seeded")})
    return metrics


def log_audit(result: AuditResult, class_names: list[str], title: str,
              roc_png: Path | None = None) -> None:
    """Audit metrics (extraction per budget with ``step`` = budget), the log-log ROC (also
    saved to ``roc_png``), the inversion figure and ``privacy/audit.json``."""
    from medsec.io import write_atomic
    from medsec.metrics.privacy import plot_mia_roc
    from medsec.privacy.audit import resolution_warnings_once
    from medsec.privacy.report import inversion_figure

    log_metrics({k: v for k, v in result.metrics.items() if not k.startswith("extraction_")}
                | {"audit_seconds": result.seconds})
    for mode, results in result.extraction.items():
        for res in results:
            log_metrics({f"extraction_{mode}_agreement": res.agreement,
                         f"extraction_{mode}_test_acc": res.test_acc,
                         "extraction_victim_test_acc": res.victim_test_acc}, step=res.budget)
    set_tags({"medsec.audit.nonmembers": result.nonmembers_from})
    if result.strongest is not None:
        set_tags({"medsec.mia.strongest": result.strongest})
    if result.scores:
        with resolution_warnings_once():
            roc = plot_mia_roc(result.scores, title=title)
        if roc_png is not None:
            write_atomic(roc_png, lambda tmp: roc.savefig(tmp, format="png", dpi=100))
        log_figure(roc, "privacy/mia_roc.png")
    if result.inversion:
        log_figure(inversion_figure(result.inversion, result.class_means, class_names),
                   "privacy/inversion.png")
    extraction = {mode: [vars(r) for r in results]
                  for mode, results in result.extraction.items()}
    log_dict({"metrics": result.metrics, "strongest": result.strongest,
              "nonmembers": result.nonmembers_from, "extraction": extraction},
             "privacy/audit.json")


@task(name="privacy-canary-audit", cache_policy=NO_CACHE)
def canary_task(cfg: MedSecConfig, data: LoadedDataset) -> CanaryAudit | None:
    """One-run DP audit of ``cfg``'s recipe (``stage.canary_audit``; None when disabled)."""
    return stage.canary_audit(cfg, data)


def log_canary_audit(audit: CanaryAudit) -> dict[str, float]:
    """The audit's finite numbers as metrics (``epsilon_audit_lower``, ``epsilon``, ``delta``,
    ``audit_*``), the tag ``medsec.audit=canary`` and the per-rule detail as
    ``privacy/canary_audit.json``; returns the metrics."""
    import math

    metrics = {k: v for k, v in audit.metrics().items() if math.isfinite(v)}
    log_metrics(metrics)
    set_tags({"medsec.audit": "canary"})
    log_dict(audit.to_dict(), "privacy/canary_audit.json")
    return metrics
