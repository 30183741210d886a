"""Attack-stage tasks: load and check the victim, start the suite, one task per attack spec
(mapped), finish the suite, log one child run per attack."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from torch import nn

from medsec.attacks.config import AttackSpec
from medsec.attacks.dataset import point_metadata, save_adversarial
from medsec.attacks.results import AttackPoint, SuiteResult
from medsec.attacks.runner import run_spec
from medsec.attacks.suite import finish_suite, start_suite
from medsec.config import MedSecConfig
from medsec.data.types import ImageDataset, LoadedDataset
from medsec.io import file_digest
from medsec.metrics.robustness import robust_correct
from medsec.stages import attack as stage
from medsec.training.checkpoint import load_classifier, require_data_version
from medsec.viz import adversarial_grid
from tasks.runners import Outcome
from tasks.tracking import (
    log_artifact,
    log_figure,
    log_metrics,
    log_params,
    set_tags,
    temp_artifact_dir,
    tracked_run,
)

GRID_EXAMPLES = 6


@task(name="load-victim")
def load_victim_task(checkpoint: str | Path, info: str | Path,
                     data: LoadedDataset) -> tuple[nn.Module, dict[str, Any]]:
    """The trained classifier (weights-only load) and a record of where it came from;
    DataError if it was trained on another version of the data."""
    model, meta = load_classifier(checkpoint)
    require_data_version(meta, data.name, data.version, checkpoint)
    run_id = json.loads(Path(info).read_text()).get("run_id") if Path(info).is_file() else None
    source = {"checkpoint": str(checkpoint), "checkpoint_md5": file_digest(checkpoint),
              "mlflow_run_id": run_id, "model_name": meta.get("model_name"),
              "dataset": meta.get("dataset"), "data_version": meta.get("data_version"),
              "seed": meta.get("seed")}
    return model, source


@task(name="check-victim", cache_policy=NO_CACHE)
def check_victim_task(cfg: MedSecConfig, data: LoadedDataset, model: nn.Module,
                      checkpoint: str | Path) -> None:
    """DataError (with the attack core's reason) if the model or the test images cannot be
    attacked: probabilities instead of logits, a dense output, pixels outside [0, 1]."""
    stage.check_victim(cfg, data, model, checkpoint)


@task(name="train-surrogate", cache_policy=NO_CACHE)
def surrogate_task(cfg: MedSecConfig, data: LoadedDataset) -> nn.Module:
    return stage.train_surrogate(cfg, data)


@task(name="attack-suite-start", cache_policy=NO_CACHE)
def start_suite_task(cfg: MedSecConfig, test: ImageDataset, model: nn.Module,
                     surrogate: nn.Module | None = None) -> SuiteResult:
    """The attacked test examples and the victim's clean predictions (no attack yet)."""
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    return start_suite(model, test, cfg.attack, surrogate, get_run_logger().info)


@task(name="attack", cache_policy=NO_CACHE, task_run_name="attack-{spec.id}")
def run_attack_task(spec: AttackSpec, cfg: MedSecConfig, train: ImageDataset, model: nn.Module,
                    suite: SuiteResult) -> list[AttackPoint]:
    """One attack spec at each of its budgets. It attacks its own copy of the victim: the
    model guard flips the model's flags, which concurrent tasks must not share."""
    return run_spec(spec, copy.deepcopy(model), suite, cfg.attack, train, get_run_logger().info)


@task(name="attack-suite-finish", cache_policy=NO_CACHE)
def finish_suite_task(cfg: MedSecConfig, model: nn.Module, suite: SuiteResult,
                      points: list[AttackPoint], surrogate: nn.Module | None = None) -> SuiteResult:
    """Worst case, gradient-masking flags, transfer attacks and the image-scaling attack."""
    return finish_suite(suite, points, model, cfg.attack, surrogate, get_run_logger().info)


def finding_sets(class_names: list[str],
                 *multi_hot: np.ndarray) -> tuple[list[str], list[np.ndarray]]:
    """Multi-label rows (n, L) in {0, 1} as codes (n,) into a list of finding-set names
    (``effusion+nodule``, ``none``), one code per distinct row across all arrays."""
    keys: dict[tuple[int, ...], int] = {}
    coded = [np.asarray([keys.setdefault(tuple(int(v) for v in row), len(keys)) for row in arr])
             for arr in multi_hot]
    names = ["+".join(n for n, v in zip(class_names, key, strict=True) if v) or "none"
             for key in keys]
    return names, coded


def examples_figure(result: SuiteResult, points: list[AttackPoint], class_names: list[str],
                    title: str):
    """Clean / adversarial / amplified-perturbation grid of the first correctly classified
    test examples (the first examples when none is) for the given attack points; multi-label
    examples are titled with their finding sets (red: some finding wrong)."""
    correct = np.flatnonzero(robust_correct(result.labels, result.clean_pred))
    rows = (correct if correct.size else np.arange(len(result.labels)))[:GRID_EXAMPLES]
    labels, clean_pred = result.labels[rows], result.clean_pred[rows]
    adv_preds = [p.adv_pred[rows] for p in points]
    if labels.ndim == 2:
        class_names, (labels, clean_pred, *adv_preds) = finding_sets(
            class_names, labels, clean_pred, *adv_preds)
    attacks = [(p.name, p.adversarial[rows], pred)
               for p, pred in zip(points, adv_preds, strict=True)]
    return adversarial_grid(result.images[rows], labels, clean_pred, attacks, class_names, title)


def strongest_points(result: SuiteResult) -> list[AttackPoint]:
    """Each attack at its largest budget (its only point when unbounded)."""
    best: dict[str, AttackPoint] = {}
    for point in result.points:
        held = best.get(point.spec.id)
        if held is None or (point.eps or 0.0) > (held.eps or 0.0):
            best[point.spec.id] = point
    return list(best.values())


def log_attack_runs(cfg: MedSecConfig, data: LoadedDataset, result: SuiteResult,
                    source: dict[str, Any]) -> list[str]:
    """One nested MLflow run per attack (tag ``medsec.attack=<name>``): its parameters,
    metrics at step = epsilon in grey levels (and flat ``eps<k>_<metric>``), an example grid
    and a sample of each adversarial dataset. Returns the child run ids."""
    by_spec: dict[str, list[AttackPoint]] = {}
    for point in result.points:
        by_spec.setdefault(point.spec.id, []).append(point)
    run_ids = []
    for spec_id, points in by_spec.items():
        spec: AttackSpec = points[0].spec
        tags = {"medsec.attack": spec.name, "medsec.attack_id": spec_id,
                "medsec.verification": data.verification,
                "medsec.source_run_id": str(source.get("mlflow_run_id"))}
        with tracked_run("attack", cfg, data.version, tags=tags, nested=True,
                         run_name=f"attack-{spec_id}") as run:
            run_ids.append(run.info.run_id)
            params = {k: v for k, v in (points[0].params | spec.params).items() if k != "eps"}
            log_params({"spec.name": spec.name, "spec.id": spec_id, "spec.norm": points[0].norm,
                        "spec.targeted": spec.targeted, "spec.eps": [p.eps for p in points],
                        **{f"spec.param.{k}": v for k, v in params.items()}})
            for point in points:
                values = dict(point.metrics)
                if point.eps is not None:
                    values["epsilon"] = point.eps
                log_metrics(values, step=point.step)
                log_metrics({f"{point.key}_{k}": v for k, v in values.items()})
            title = f"{spec_id} on {data.name}"
            log_figure(examples_figure(result, points, list(data.class_names), title),
                       "examples.png")
            if cfg.attack.mlflow_sample:
                _log_samples(points, result, source, data, cfg.attack.mlflow_sample)
    return run_ids


def _log_samples(points: list[AttackPoint], result: SuiteResult, source: dict[str, Any],
                 data: LoadedDataset, n: int) -> None:
    with temp_artifact_dir() as tmp:
        for point in points:
            path = Path(tmp) / f"{point.name}_sample.npz"
            targets = None if point.targets is None else point.targets[:n]
            save_adversarial(path, point.adversarial[:n], result.labels[:n], result.indices[:n],
                             point_metadata(point, source, data), targets)
            log_artifact(path, "adversarial_sample")
            log_artifact(path.with_suffix(".json"), "adversarial_sample")


class _AttackFailed(Exception):
    """Ends a failed attack's MLflow run as FAILED (raised and caught in this module)."""


def log_failed_attacks(cfg: MedSecConfig, data: LoadedDataset, status: dict[str, Outcome],
                       source: dict[str, Any]) -> list[str]:
    """One nested run per failed attack spec, ended FAILED, tagged with its one-line error
    (``medsec.attack.error``); the active (suite) run gets ``medsec.attack.failed`` (the
    failed spec ids, or ``none``). Returns the failed runs' ids."""
    specs = {spec.id: spec for spec in cfg.attack.attacks}
    run_ids = []
    for spec_id, outcome in status.items():
        if outcome.ok:
            continue
        tags = {"medsec.attack": specs[spec_id].name, "medsec.attack_id": spec_id,
                "medsec.attack.status": "failed", "medsec.attack.error": str(outcome.error),
                "medsec.source_run_id": str(source.get("mlflow_run_id"))}
        try:
            with tracked_run("attack", cfg, data.version, tags=tags, nested=True,
                             run_name=f"attack-{spec_id}") as run:
                run_ids.append(run.info.run_id)
                raise _AttackFailed
        except _AttackFailed:
            pass
    failed = [spec_id for spec_id, outcome in status.items() if not outcome.ok]
    set_tags({"medsec.attack.failed": ",".join(failed) or "none"})
    return run_ids
