"""Config -> defense build context, scored test images and defense evaluation."""

from __future__ import annotations

from collections.abc import Sequence

from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn

from medsec.config import MedSecConfig
from medsec.data.types import LoadedDataset
from medsec.defenses.base import Defense, require_classifier
from medsec.defenses.build import BuildContext, check_multilabel
from medsec.defenses.evaluate import DefenseResult, evaluate_defense
from medsec.errors import DataError
from medsec.stages import classifier


def context(cfg: MedSecConfig, data: LoadedDataset, baseline: nn.Module,
            callbacks: Sequence[Callback] = ()) -> BuildContext:
    """What the defense builders share: the classifier recipe and fit strategy of ``cfg``
    (defended models train like the undefended one), ``defense.eval``, data, the baseline."""
    return BuildContext(classifier.recipe(cfg), cfg.defense.eval, data, baseline, callbacks,
                        classifier.fit_strategy(cfg))


def eval_split(cfg: MedSecConfig, data: LoadedDataset, model: nn.Module,
               model_name: str | None) -> tuple[Tensor, Tensor]:
    """The scored test images (N, C, H, W) in [0, 1] and labels (N,) (multi-label data:
    multi-hot (N, L)): the first ``defense.eval.max_examples`` of the test split. Checks the
    undefended model and, on multi-label data, that every configured defense applies
    (ConfigError naming ``defense.defenses[i].name`` otherwise) first."""
    check_multilabel(cfg.defense.defenses, data.task == "multilabel")
    if model_name != cfg.model.name:
        raise DataError(f"the undefended checkpoint is a {model_name!r} but the config trains "
                        f"{cfg.model.name!r}: retrain first")
    require_classifier(model, data.image_shape, "undefended")
    return classifier.split(cfg, data, "test").head(cfg.defense.eval.max_examples).tensors()


def evaluate(cfg: MedSecConfig, defense: Defense, images: Tensor, labels: Tensor,
             baseline: nn.Module) -> DefenseResult:
    """Score ``defense`` on the test images with ``defense.eval`` and ``seed``."""
    return evaluate_defense(defense, images, labels, cfg.defense.eval, cfg.seed, baseline)
