"""Config -> defense build context, scored test images and defense evaluation."""

from __future__ import annotations

from collections.abc import Sequence

from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn

from medsec.config import MedSecConfig
from medsec.data.types import LoadedDataset
from medsec.defenses.base import Defense, require_classifier
from medsec.defenses.build import MULTILABEL_UNSUPPORTED, BuildContext
from medsec.defenses.evaluate import DefenseResult, evaluate_defense
from medsec.errors import DataError
from medsec.stages import classifier
from medsec.stages.applicability import NotApplicable, partition


def context(cfg: MedSecConfig, data: LoadedDataset, baseline: nn.Module,
            callbacks: Sequence[Callback] = ()) -> BuildContext:
    """What the defense builders share: the classifier recipe and fit strategy of ``cfg``
    (defended models train like the undefended one), ``defense.eval``, data, the baseline."""
    return BuildContext(classifier.recipe(cfg), cfg.defense.eval, data, baseline, callbacks,
                        classifier.fit_strategy(cfg))


def applicable(cfg: MedSecConfig, data: LoadedDataset
               ) -> tuple[MedSecConfig, list[NotApplicable]]:
    """``cfg`` with only the ``defense.defenses`` that apply to ``data``, and a record of each
    one left out: on multi-label data mahalanobis and smoothing (one class per image, see
    :data:`~medsec.defenses.build.MULTILABEL_UNSUPPORTED`) are skipped, each recorded as
    ``defense.defenses[<i>].name <label>: not applicable to multi-label data (<why>)``;
    ConfigError naming the field when none remains. Single-label data: unchanged."""
    if data.task != "multilabel":
        return cfg, []
    kept, skipped = partition(
        cfg.defense.defenses, lambda spec: MULTILABEL_UNSUPPORTED.get(spec.name),
        lambda i, spec: f"defense.defenses[{i}].name", lambda spec: spec.key)
    if not skipped:
        return cfg, []
    defense = cfg.defense.model_copy(update={"defenses": kept})
    return cfg.model_copy(update={"defense": defense}), skipped


def eval_split(cfg: MedSecConfig, data: LoadedDataset, model: nn.Module,
               model_name: str | None) -> tuple[Tensor, Tensor]:
    """The scored test images (N, C, H, W) in [0, 1] and labels (N,) (multi-label data:
    multi-hot (N, L)): the first ``defense.eval.max_examples`` of the test split. Checks the
    undefended model first. (Defenses that do not apply to the data are left out first by
    :func:`applicable`.)"""
    if model_name != cfg.model.name:
        raise DataError(f"the undefended checkpoint is a {model_name!r} but the config trains "
                        f"{cfg.model.name!r}: retrain first")
    require_classifier(model, data.image_shape, "undefended")
    return classifier.split(cfg, data, "test").head(cfg.defense.eval.max_examples).tensors()


def evaluate(cfg: MedSecConfig, defense: Defense, images: Tensor, labels: Tensor,
             baseline: nn.Module) -> DefenseResult:
    """Score ``defense`` on the test images with ``defense.eval`` and ``seed``."""
    return evaluate_defense(defense, images, labels, cfg.defense.eval, cfg.seed, baseline)
