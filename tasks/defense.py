"""Defense-stage tasks: build and score one defense, log it, save defended checkpoints."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE
from torch import Tensor, nn

from medsec.config import MedSecConfig
from medsec.data.types import LoadedDataset
from medsec.defenses.base import Defense
from medsec.defenses.build import BuildContext, build_defense
from medsec.defenses.config import DefenseSpec
from medsec.defenses.evaluate import DefenseResult
from medsec.stages import defense as stage
from medsec.training.checkpoint import save_classifier
from tasks.models import log_classifier
from tasks.tracking import log_artifact, log_dict, log_metrics, log_params, set_tags


@task(name="defense-eval-split", cache_policy=NO_CACHE)
def eval_split_task(cfg: MedSecConfig, data: LoadedDataset, model: nn.Module,
                    model_name: str | None) -> tuple[Tensor, Tensor]:
    """The scored test images and labels (see :func:`medsec.stages.defense.eval_split`)."""
    return stage.eval_split(cfg, data, model, model_name)


@task(name="build-defense", cache_policy=NO_CACHE)
def build_defense_task(spec: DefenseSpec, ctx: BuildContext) -> Defense:
    return build_defense(spec, ctx)


@task(name="evaluate-defense", cache_policy=NO_CACHE)
def evaluate_defense_task(defense: Defense, images: Tensor, labels: Tensor, cfg: MedSecConfig,
                          baseline: nn.Module) -> DefenseResult:
    return stage.evaluate(cfg, defense, images, labels, baseline)


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
    classifier; logged to the active run under ``model/``. None otherwise. An adversarially
    trained one (:data:`ADVERSARIAL_TRAINING`) is also registered as
    ``medsec-<dataset>-<model>@robust`` when ``example`` images (N, C, H, W) in [0, 1] and
    ``dataset`` are given."""
    if defense.classifier is None:
        return None
    path = save_classifier(directory / f"{defense.name}.pt", defense.classifier, defense.meta)
    log_artifact(path, "model")
    if (example is not None and dataset
            and defense.meta.get("defense_name") in ADVERSARIAL_TRAINING):
        log_classifier(defense.classifier, example, dataset, defense.meta["model_name"],
                       alias="robust")
    return path
