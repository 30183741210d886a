"""Privacy tasks: the audit's data sets, the audit, and what they log to MLflow."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from medsec.config import MedSecConfig, RunnerConfig
from medsec.data.types import LoadedDataset
from medsec.stages import privacy as stage
from medsec.stages.privacy import SweepPoint
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
    from tasks.runners import Outcome


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


@dataclass
class PointResult:
    """One sweep point's outcome: the recipe audit (with its target), the target's test
    metrics, the side attacks (None when not configured) and the one-run DP audit (None when
    ``privacy.canary`` is off)."""

    result: RecipeAuditResult
    test: dict[str, float]
    side: AuditResult | None
    canary: CanaryAudit | None


@task(name="privacy-point", cache_policy=NO_CACHE, task_run_name="privacy-{label}")
def point_task(label: str, point: SweepPoint, data: LoadedDataset,
               pool: AuditPool) -> PointResult:
    """One sweep point (``label``: ``none``, ``dp-eps8``, ...): its recipe audit (reference
    models mapped on ``runner``), test metrics, side attacks and one-run DP audit."""
    from tasks.train import evaluate_task

    cfg = point.cfg
    result = stage.recipe_audit(cfg, data, pool, runner=mapped_references(cfg.runner),
                                adversarial=point.adversarial)
    test = evaluate_task(cfg, data, result.target.model, "test").metrics
    return PointResult(result, test, stage.recipe_side_attacks(cfg, data, pool, result),
                       stage.canary_audit(cfg, data))


def mapped_points(cfg: MedSecConfig, data: LoadedDataset, points: list[SweepPoint],
                  pool: AuditPool, out: str | Path = ".") -> list[Outcome]:
    """Every sweep point its own ``privacy-<label>`` task, retried (``runner.retries``),
    cached on (label, target epsilon, adversarial recipe, the point's seed/dataset/model/
    train/privacy sections, data version), results persisted under ``<out>/.prefect/results``;
    one :class:`~tasks.runners.Outcome` per point (a failed point does not stop the others).

    The points run one at a time on an in-process runner (the training seeds process-global
    RNGs, so two points in threads would not reproduce); each point's reference models are
    the parallel part, mapped on the configured runner (the flow's, or Dask)."""
    from prefect import unmapped
    from prefect.task_runners import ThreadPoolTaskRunner

    from tasks.runners import outcomes, sweep_task

    sections = {"seed", "dataset", "model", "train", "privacy"}

    def key(params: dict[str, Any]) -> tuple:
        point = params["point"]
        adv = None if point.adversarial is None else point.adversarial.model_dump(mode="json")
        return (point.label, point.target_epsilon, adv,
                point.cfg.model_dump(mode="json", include=sections), data.version)

    task = sweep_task(point_task, key, out, cfg.runner.retries)
    with ThreadPoolTaskRunner(max_workers=1) as runner:
        futures = runner.map(task, {"label": [p.label for p in points], "point": points,
                                    "data": unmapped(data), "pool": unmapped(pool)})
        return outcomes(futures)


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
    # attacks with no meaning for the data (inversion on multi-label): a tag, never a number
    set_tags({f"medsec.{name}": f"skipped: {why}"[:500] for name, why in result.skipped.items()})
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
    ``audit_*``), the tags ``medsec.audit=canary`` and ``medsec.canary_kind`` (``gradient`` /
    ``input``; also the param ``canary_kind``) and the per-rule detail as ``artifact``;
    returns the metrics (shared by the privacy, deepfake and federated stages)."""
    import math

    metrics = {k: v for k, v in audit.metrics().items() if math.isfinite(v)}
    log_metrics(metrics)
    set_tags({"medsec.audit": "canary", "medsec.canary_kind": audit.kind})
    log_params({"canary_kind": audit.kind})
    log_dict(audit.to_dict(), artifact)
    return metrics


REGISTERED = "models:/"
CHECKPOINT_ARTIFACT = "model/classifier.pt"
"""Where the train stage logs its checkpoint (with its card) in the run it registers."""


def resolve_checkpoint(source: str, cfg: MedSecConfig, dest: str | Path) -> tuple[str, str | None]:
    """A checkpoint to audit: a file path as is, or a registered model
    (``models:/<name>@<alias>`` or ``models:/<name>/<version>``, e.g.
    ``models:/medsec-pneumoniamnist-small_cnn@champion``) resolved to the checkpoint artifact
    (``model/classifier.pt``, its card with any recorded audit members) of the run that logged
    that model version, downloaded under ``dest``. Returns (local path, that run id or None).
    ConfigError (one line) when the model or version is not registered, DataError when its
    run has no checkpoint."""
    import re

    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from medsec.errors import ConfigError, DataError
    from tasks.tracking import check_tracking_server

    if not source.startswith(REGISTERED):
        return source, None
    match = re.fullmatch(r"models:/([^/@]+)(?:@([^/@]+)|/(\d+))", source)
    if match is None:
        raise ConfigError(f"privacy.audit.checkpoint: {source!r} is not models:/<name>@<alias> "
                          "or models:/<name>/<version>")
    name, alias, version = match.groups()
    client = MlflowClient(tracking_uri=check_tracking_server(cfg))
    try:
        found = (client.get_model_version_by_alias(name, alias) if alias
                 else client.get_model_version(name, version))
    except MlflowException as exc:
        reason = (str(exc.message).strip().splitlines() or [""])[0][:200]
        raise ConfigError(f"privacy.audit.checkpoint: {source} is not registered in the "
                          f"tracking store ({reason})") from None
    if not found.run_id:
        raise DataError(f"{source}: model version {found.version} has no training run")
    try:
        path = client.download_artifacts(found.run_id, CHECKPOINT_ARTIFACT, str(dest))
    except (MlflowException, OSError):
        raise DataError(f"{source}: run {found.run_id} (version {found.version}) has no "
                        f"{CHECKPOINT_ARTIFACT} artifact to audit") from None
    return path, found.run_id
