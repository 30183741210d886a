"""Privacy tasks: the audit's data sets, the audit, and what they log to MLflow."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from medsec.config import MedSecConfig, RunnerConfig
from medsec.data.types import LoadedDataset
from medsec.stages import privacy as stage
from tasks.tracking import log_dict, log_figure, log_metrics, log_params, set_tags

if TYPE_CHECKING:  # the audit imports sklearn/Opacus: only when a privacy flow runs
    import numpy as np
    from torch import nn

    from medsec.privacy.audit import AuditResult
    from medsec.privacy.audit_sets import AuditData
    from medsec.privacy.canary_audit import CanaryAudit
    from medsec.privacy.recipe_audit import (
        AuditPool,
        RecipeAuditResult,
        RecipeSpec,
        ReferenceRunner,
    )


@task(name="privacy-audit-data", cache_policy=NO_CACHE)
def audit_data_task(cfg: MedSecConfig, data: LoadedDataset,
                    meta: dict[str, Any] | None = None) -> AuditData:
    return stage.audit_sets(cfg, data, meta)


@task(name="privacy-audit-pool", cache_policy=NO_CACHE)
def audit_pool_task(cfg: MedSecConfig, data: LoadedDataset) -> AuditPool:
    return stage.audit_pool(cfg, data)


@task(name="privacy-reference", cache_policy=NO_CACHE, task_run_name="reference-seed{seed}")
def reference_task(spec: RecipeSpec, pool: AuditPool, in_mask: np.ndarray,
                   seed: int) -> np.ndarray:
    """One reference model of the recipe audit (trained on the pool images of ``in_mask``
    (N,) bool, queried on the whole pool): phi (N, A) float64."""
    from medsec.privacy.recipe_audit import train_reference

    return train_reference(spec, pool, in_mask, seed)


def mapped_references(settings: RunnerConfig, out: str | Path = ".") -> ReferenceRunner:
    """The recipe audit's reference runner: each reference model its own task on the
    configured runner (``runner``), retried, cached on (recipe, pool, half, seed), results
    persisted under ``<out>/.prefect/results``. Every reference must succeed (the audit's
    statistics need all K), so the first failure is raised."""
    import dataclasses
    import uuid

    from prefect import unmapped

    from medsec.io import arrays_digest
    from tasks.runners import sweep_runner, sweep_task

    def run(spec: RecipeSpec, pool: AuditPool, masks: list[np.ndarray],
            seeds: list[int]) -> list[np.ndarray]:
        pool_key = arrays_digest(pool.images.numpy(), pool.labels.numpy())
        # training hooks (e.g. adversarial training) have no stable repr: never reused
        recipe_key = (repr(dataclasses.replace(spec, hooks=None)),
                      None if spec.hooks is None else uuid.uuid4().hex)

        def key(params: dict[str, Any]) -> tuple:
            return (*recipe_key, pool_key, arrays_digest(params["in_mask"]), params["seed"])

        with sweep_runner(settings, out) as runner:
            mapped = sweep_task(reference_task, key, out, settings.retries)
            futures = runner.map(mapped, {"spec": unmapped(spec), "pool": unmapped(pool),
                                          "in_mask": list(masks), "seed": list(seeds)})
            return [future.result() for future in futures]

    return run


@task(name="privacy-recipe-audit", cache_policy=NO_CACHE)
def recipe_audit_task(cfg: MedSecConfig, data: LoadedDataset, pool: AuditPool,
                      adversarial: Any = None) -> RecipeAuditResult:
    """The recipe audit of ``cfg``; its reference models are mapped tasks on ``runner``."""
    return stage.recipe_audit(cfg, data, pool, runner=mapped_references(cfg.runner),
                              adversarial=adversarial)


@task(name="privacy-side-attacks", cache_policy=NO_CACHE)
def recipe_side_task(cfg: MedSecConfig, data: LoadedDataset, pool: AuditPool,
                     result: RecipeAuditResult) -> AuditResult | None:
    return stage.recipe_side_attacks(cfg, data, pool, result)


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


def _log_membership(scores: dict, metrics: dict[str, Any], declared: str | None, audit: str,
                    title: str, roc_png: Path | None) -> None:
    """Membership metrics (finite ones; unresolved are None and skipped), the tags
    ``medsec.audit`` and ``medsec.mia_attack``, the log-log ROC (also to ``roc_png``)."""
    from medsec.io import write_atomic
    from medsec.metrics.privacy import plot_mia_roc

    log_metrics({k: v for k, v in metrics.items() if v is not None})
    set_tags({"medsec.audit": audit} | ({"medsec.mia_attack": declared} if declared else {}))
    if scores:
        roc = plot_mia_roc(scores, title=title)
        if roc_png is not None:
            write_atomic(roc_png, lambda tmp: roc.savefig(tmp, format="png", dpi=100))
        log_figure(roc, "privacy/mia_roc.png")


def log_recipe_audit(result: RecipeAuditResult, side: AuditResult | None, class_names: list[str],
                     title: str, roc_png: Path | None = None) -> None:
    """A recipe audit (``medsec.audit=recipe``): membership metrics with intervals, sample
    sizes, reference-model timings, tags, ROC, ``privacy/audit.json`` (nulls with reasons);
    extraction/inversion of ``side`` when run."""
    _log_membership(result.scores, result.metrics, result.declared, "recipe", title, roc_png)
    set_tags({"medsec.audit.nonmembers": "pool (random half of train+val)"})
    log_metrics({"audit_seconds": result.seconds})
    if side is not None:
        _log_side(side, class_names)
    log_dict({"metrics": result.metrics, "null_reasons": result.null_reasons,
              "declared_attack": result.declared, "audit": "recipe",
              "members": result.target.meta.get("audit_members")}, "privacy/audit.json")


def _log_side(result: AuditResult, class_names: list[str]) -> None:
    from medsec.privacy.report import inversion_figure

    log_metrics({k: v for k, v in result.metrics.items()
                 if k.startswith("inversion_") and v is not None})
    for mode, results in result.extraction.items():
        for res in results:
            log_metrics({f"extraction_{mode}_agreement": res.agreement,
                         f"extraction_{mode}_test_acc": res.test_acc,
                         "extraction_victim_test_acc": res.victim_test_acc}, step=res.budget)
    if result.inversion:
        log_figure(inversion_figure(result.inversion, result.class_means, class_names),
                   "privacy/inversion.png")


def log_audit(result: AuditResult, class_names: list[str], title: str,
              roc_png: Path | None = None) -> None:
    """Audit metrics (extraction per budget with ``step`` = budget), the log-log ROC (also
    saved to ``roc_png``), the inversion figure and ``privacy/audit.json``."""
    membership = {k: v for k, v in result.metrics.items()
                  if not k.startswith(("extraction_", "inversion_"))}
    _log_membership(result.scores, membership | {"audit_seconds": result.seconds},
                    result.declared, "checkpoint", title, roc_png)
    set_tags({"medsec.audit.nonmembers": result.nonmembers_from})
    _log_side(result, class_names)
    extraction = {mode: [vars(r) for r in results]
                  for mode, results in result.extraction.items()}
    log_dict({"metrics": result.metrics, "null_reasons": result.null_reasons,
              "declared_attack": result.declared, "audit": "checkpoint", "notes": result.notes,
              "nonmembers": result.nonmembers_from, "extraction": extraction},
             "privacy/audit.json")


@task(name="privacy-canary-audit", cache_policy=NO_CACHE)
def canary_task(cfg: MedSecConfig, data: LoadedDataset) -> CanaryAudit | None:
    """One-run DP audit of ``cfg``'s recipe (``stage.canary_audit``; None when disabled)."""
    return stage.canary_audit(cfg, data)


def log_canary_audit(audit: CanaryAudit, artifact: str = "privacy/canary_audit.json"
                     ) -> dict[str, float]:
    """The audit's finite numbers as metrics (``epsilon_audit_lower``, ``epsilon``, ``delta``,
    ``audit_*``), the tag ``medsec.audit=canary`` and the per-rule detail as ``artifact``;
    returns the metrics (shared by the privacy, deepfake and federated stages)."""
    import math

    metrics = {k: v for k, v in audit.metrics().items() if math.isfinite(v)}
    log_metrics(metrics)
    set_tags({"medsec.audit": "canary"})
    log_dict(audit.to_dict(), artifact)
    return metrics
