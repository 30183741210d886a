"""Federated flow: hospitals train together with Flower; compared with centralised training."""

from __future__ import annotations

from prefect import flow

from flows.outputs import METRICS, MODELS, PLOTS, REPORTS, write_metrics
from flows.train import history_csv
from medsec.config import MedSecConfig
from medsec.data.types import LoadedDataset
from medsec.io import write_json, write_text
from medsec.stages.federated import by_site
from tasks.common import load_config_task, load_dataset_task
from tasks.federated import (
    canary_task,
    centralized_task,
    federated_tags,
    federated_task,
    federation_metrics,
    gradient_inversion_task,
    log_federation,
    recipe_audit_task,
)
from tasks.privacy import audit_pool_task, log_canary_audit, log_recipe_audit
from tasks.tracking import (
    log_artifact,
    log_dict,
    log_metrics,
    log_params,
    log_training_device,
    tracked_run,
)

FEDERATED_CKPT = MODELS / "federated.pt"
FEDERATED_METRICS = METRICS / "federated.json"
FEDERATED_HISTORY = PLOTS / "federated_history.csv"
FEDERATED_REPORT_DIR = REPORTS / "federated"


@flow(name="federated")
def federated_flow(
    config: str | None = None, preset: str | None = None, overrides: list[str] | None = None,
) -> dict:
    """Write ``models/federated.pt``, ``metrics/federated.json``, the per-round CSV and
    ``reports/federated/`` (gradient inversion, canary audit, recipe audits: when enabled)."""
    cfg = load_config_task(config, preset, overrides)
    data = load_dataset_task(cfg)
    cfg = by_site(cfg, data)  # own data with site keys: one client per site (partition=site)
    with tracked_run("federated", cfg, data.version, tags=federated_tags(cfg, data.verification),
                     run_name=f"federated-{cfg.dataset.name}-{cfg.federated.strategy}") as run:
        result = federated_task(cfg, data)
        baseline = centralized_task(cfg, data) if cfg.federated.compare_centralized else None
        metrics = federation_metrics(result, baseline)
        FEDERATED_REPORT_DIR.mkdir(parents=True, exist_ok=True)  # a DVC out, even when empty
        if cfg.federated.gradient_inversion.enabled:  # the server's reconstruction attack
            from medsec.privacy.gradient_inversion import inversion_metrics, write_inversion_report

            rows = gradient_inversion_task(cfg, data)
            metrics |= inversion_metrics(rows)
            for path in write_inversion_report(rows, FEDERATED_REPORT_DIR):
                log_artifact(path, "federated")
        audit = canary_task(cfg, data)  # federated.canary with client DP: hospital 0 audited
        if audit is not None:  # its own child run, tagged medsec.audit=canary
            metrics |= {"client_dp_epsilon_audit_lower": audit.epsilon_audit_lower,
                        "client_dp_audit_epsilon": audit.epsilon}
            with tracked_run("federated", cfg, data.version, nested=True,
                             tags=federated_tags(cfg, data.verification),
                             run_name=f"federated-{cfg.dataset.name}-client0-canary"):
                log_canary_audit(audit, "federated/canary_audit.json")
            write_json(FEDERATED_REPORT_DIR / "canary_audit.json", audit.to_dict())
        metrics |= _recipe_audits(cfg, data)  # federated.recipe_audit: child runs
        keys = sorted({k for row in result.history for k in row},
                      key=lambda k: (k != "round", k))
        write_text(FEDERATED_HISTORY, history_csv(result.history, keys))
        log_federation(result, metrics, FEDERATED_CKPT, [FEDERATED_HISTORY])
        write_metrics(FEDERATED_METRICS, metrics)
    return {"run_id": run.info.run_id, "metrics": metrics}


RECIPE_HEADLINE = ("mia_auc", "mia_auc_ci_low", "mia_auc_ci_high", "mia_tpr_at_1pct_fpr",
                   "mia_n_members", "mia_n_nonmembers", "mia_n_reference_models", "epsilon",
                   "epsilon_audit_lower")


def _recipe_audits(cfg: MedSecConfig, data: LoadedDataset) -> dict[str, float]:
    """Recipe audits of the federated recipes (``federated.recipe_audit``): one child run per
    recipe (``medsec.audit=recipe``, ``medsec.mia_attack``, membership metrics with
    intervals and sample sizes, ``epsilon``/``delta`` under client DP, the canary audit's
    ``epsilon_audit_lower`` with params ``canary_kind`` / ``canary_num_canaries``, the
    target's test metrics, ROC), ``reports/federated/recipe_audit_<label>.json``; returns the
    headline
    numbers as ``recipe_audit_<label>_<metric>`` for the stage's metrics."""
    from medsec.stages.federated import recipe_audit_points

    points = recipe_audit_points(cfg)
    if not points:
        return {}
    pool = audit_pool_task(cfg, data)
    out: dict[str, float] = {}
    for label, point in points:
        result, test = recipe_audit_task(label, point, data, pool)
        with tracked_run("federated", point, data.version, nested=True,
                         tags=federated_tags(point, data.verification),
                         run_name=f"federated-{cfg.dataset.name}-{label}-recipe-audit"):
            log_metrics(test)
            log_training_device(result.target.meta)  # the audited target's fit
            log_recipe_audit(result, None, list(data.class_names),
                             f"{data.name}, federated {label}",
                             FEDERATED_REPORT_DIR / f"mia_roc_{label}.png")
            canary = result.target.meta.get("canary_audit")
            if canary is not None:  # epsilon_audit_lower beside epsilon (in the metrics)
                log_params({"canary_kind": canary["kind"],
                            "canary_num_canaries": canary["num_canaries"]})
                log_dict(canary, "federated/canary_audit.json")
        write_json(FEDERATED_REPORT_DIR / f"recipe_audit_{label}.json", {
            "declared_attack": result.declared, "metrics": result.metrics,
            "null_reasons": result.null_reasons, "test": test,
            "canary_audit": result.target.meta.get("canary_audit")})
        out |= {f"recipe_audit_{label}_{k}": v for k, v in result.metrics.items()
                if k in RECIPE_HEADLINE and v is not None}
    return out


if __name__ == "__main__":
    federated_flow()
