"""Config -> attack stage: the victim's check, the attacked splits and the transfer surrogate
(its recipe, trained through :func:`medsec.training.job.train_classifier`)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from medsec.attacks.registry import multilabel_refusal
from medsec.config import MedSecConfig
from medsec.data.types import ImageDataset, LoadedDataset
from medsec.errors import ConfigError, DataError
from medsec.models.checks import check_classifier
from medsec.stages import classifier
from medsec.stages.applicability import NotApplicable, partition
from medsec.training.config import ClassifierRecipe


def splits(cfg: MedSecConfig, data: LoadedDataset) -> tuple[ImageDataset, ImageDataset]:
    """The test split attacked (its first ``attack.n_examples``) and the train split a
    ``uap`` is fitted on, truncated to ``dataset.max_eval`` / ``dataset.max_train``."""
    return classifier.split(cfg, data, "test"), classifier.split(cfg, data, "train")


def applicable(cfg: MedSecConfig, data: LoadedDataset
               ) -> tuple[MedSecConfig, list[NotApplicable]]:
    """``cfg`` with only the ``attack.attacks`` that run on ``data``, and a record of each one
    left out. On multi-label data (multi-hot labels, several findings per image) targeted
    specs, deepfool, cw, one_pixel and uap are skipped, each recorded as
    ``attack.attacks[<i>] <id>: not applicable to multi-label data (<why>)`` (a warning line
    now; the flow tags and reports it); ConfigError naming the field when none remains.
    Single-label data: ``cfg`` unchanged, nothing skipped."""
    if data.task != "multilabel":
        return cfg, []
    kept, skipped = partition(
        cfg.attack.attacks, lambda spec: multilabel_refusal(spec.name, spec.targeted),
        lambda i, spec: f"attack.attacks[{i}]", lambda spec: spec.id)
    if not skipped:
        return cfg, []
    attack = cfg.attack.model_copy(update={"attacks": kept})
    return cfg.model_copy(update={"attack": attack}), skipped


def check_victim(cfg: MedSecConfig, data: LoadedDataset, model: nn.Module,
                 checkpoint: str | Path) -> None:
    """DataError (with the attack core's reason) if the model or the test images cannot be
    attacked: probabilities instead of logits, a dense output, pixels outside [0, 1],
    multi-hot labels whose width is not the model's. (Attacks that do not apply to the data
    are left out first by :func:`applicable`.)"""
    images, labels = splits(cfg, data)[0].head(cfg.attack.n_examples).tensors()
    try:
        check_classifier(model, images, labels)
    except ValueError as exc:
        raise DataError(f"cannot attack the model {checkpoint} on {data.name}: {exc}") from None


def check_surrogate(cfg: MedSecConfig) -> None:
    """ConfigError if the configured surrogate would be the victim itself (same model, norm
    and seed: that is a white-box attack, not a transfer)."""
    transfer = cfg.attack.transfer
    if transfer is None:
        return
    s = transfer.surrogate
    if (s.model, s.norm, s.seed) == (cfg.model.name, cfg.model.norm, cfg.seed):
        raise ConfigError(
            f"attack.transfer.surrogate: model {s.model!r}, norm {s.norm!r} and seed {s.seed} "
            "are the victim's own: change surrogate.seed or surrogate.model"
        )


def surrogate_recipe(cfg: MedSecConfig) -> ClassifierRecipe:
    """The victim's recipe with ``attack.transfer.surrogate``'s model, norm, epochs and seed
    (trained without DP: the plain fit)."""
    transfer = cfg.attack.transfer
    if transfer is None:
        raise ValueError("attack.transfer is not configured")
    check_surrogate(cfg)
    s = transfer.surrogate
    model = cfg.model.model_copy(update={"name": s.model, "norm": s.norm})
    return classifier.recipe(cfg).model_copy(update={"model": model}).derive(s.epochs, s.seed)


def train_surrogate(cfg: MedSecConfig, data: LoadedDataset) -> nn.Module:
    """Train the transfer surrogate (:func:`surrogate_recipe`); the network in eval mode."""
    from medsec.training.job import train_classifier  # Lightning: imported only when used

    return train_classifier(surrogate_recipe(cfg), data).model.eval()
