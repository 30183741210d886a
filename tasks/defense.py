"""Defense-stage tasks: build and score one defense, log it, save defended checkpoints."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from lightning.pytorch.callbacks import Callback
from prefect import task
from prefect.cache_policies import NO_CACHE
from torch import Tensor, nn

from medsec.config import MedSecConfig
from medsec.data.types import LoadedDataset
from medsec.defenses.base import Defense
from medsec.defenses.build import BuildContext, build_defense, undefended
from medsec.defenses.config import DefenseSpec
from medsec.defenses.evaluate import DefenseResult
from medsec.stages import defense as stage
from medsec.training.checkpoint import save_classifier
from tasks.models import log_classifier
from tasks.tracking import (
    log_artifact,
    log_dict,
    log_metrics,
    log_params,
    log_training_device,
    set_tags,
)


@task(name="defense-eval-split", cache_policy=NO_CACHE)
def eval_split_task(cfg: MedSecConfig, data: LoadedDataset, model: nn.Module,
                    model_name: str | None) -> tuple[Tensor, Tensor]:
    """The scored test images and labels (see :func:`medsec.stages.defense.eval_split`)."""
    return stage.eval_split(cfg, data, model, model_name)


class EpochRecorder(Callback):
    """Keeps each training epoch's record (``epoch`` and the module's metrics) in ``epochs``:
    a mapped defense may train in another thread or process, away from the MLflow run, so its
    curves are logged afterwards (:func:`log_epochs`)."""

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if getattr(pl_module, "history", None):
            self.epochs.append(dict(pl_module.history[-1]))


@dataclass
class DefenseOutcome:
    """A built and scored defense and the training epochs it took (empty when none)."""

    defense: Defense
    result: DefenseResult
    epochs: list[dict[str, float]] = field(default_factory=list)


@task(name="defense", cache_policy=NO_CACHE, task_run_name="defense-{key}")
def defense_task(key: str, spec: DefenseSpec | None, ctx: BuildContext, images: Tensor,
                 labels: Tensor, cfg: MedSecConfig, baseline: nn.Module) -> DefenseOutcome:
    """Build defense ``spec`` (None: the undefended model) and score it on ``images``
    (N, C, H, W) in [0, 1] / ``labels`` (N,) (multi-label data: multi-hot (N, L), scored by
    exact match) under the configured adaptive attacks."""
    recorder = EpochRecorder()
    ctx = dataclasses.replace(ctx, callbacks=[recorder])
    defense = undefended(baseline) if spec is None else build_defense(spec, ctx)
    return DefenseOutcome(defense, stage.evaluate(cfg, defense, images, labels, baseline),
                          recorder.epochs)


def log_epochs(epochs: list[dict[str, float]]) -> None:
    """Training curves of a defended model (``step`` = epoch) into the active run."""
    for record in epochs:
        row = dict(record)
        epoch = int(row.pop("epoch", 0))
        log_metrics(row, step=epoch)


def log_defense_result(result: DefenseResult, spec: DefenseSpec | None,
                       baseline: DefenseResult | None) -> None:
    """Metrics (with costs and the gap to the undefended model), flags as tags, attack rows."""
    metrics = dict(result.metrics) | result.costs
    if baseline is not None:
        for key in ("clean_acc", "robust_acc"):
            metrics[f"baseline_{key}"] = baseline.metrics[key]
            metrics[f"{key}_gain"] = result.metrics[key] - baseline.metrics[key]
    log_metrics(metrics)
    if spec is not None:
        log_params({f"defense.params.{k}": v for k, v in spec.params.items()})
    set_tags({"medsec.defense.flagged": str(result.flagged).lower(),
              "medsec.defense.flags": ",".join(k for k, v in result.flags.items() if v) or "none"})
    log_dict({"attacks": result.attacks, "flags": result.flags, "metrics": result.metrics,
              "costs": result.costs}, "defense/result.json")


ADVERSARIAL_TRAINING = ("pgd_at", "trades", "fast_fgsm_at")  # registered with alias robust


def save_defended(defense: Defense, directory: Path, example: Tensor | None = None,
                  dataset: str | None = None) -> Path | None:
    """``<directory>/<label>.pt`` (``load_classifier`` format) for defenses that trained a
    classifier; logged to the active run under ``model/``, which a defense that trained it
    (``meta["device"]``) tags with ``medsec.device`` / ``medsec.precision``. None otherwise.
    An adversarially trained one (:data:`ADVERSARIAL_TRAINING`) is also registered as
    ``medsec-<dataset>-<model>@robust`` when ``example`` images (N, C, H, W) in [0, 1] and
    ``dataset`` are given."""
    if defense.classifier is None:
        return None
    if defense.meta.get("device"):  # trained here (not a wrapped baseline): where and how
        log_training_device(defense.meta)
    path = save_classifier(directory / f"{defense.name}.pt", defense.classifier, defense.meta)
    log_artifact(path, "model")
    if (example is not None and dataset
            and defense.meta.get("defense_name") in ADVERSARIAL_TRAINING):
        log_classifier(defense.classifier, example, dataset, defense.meta["model_name"],
                       alias="robust")
    return path
