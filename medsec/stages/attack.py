"""Config -> attack stage: the victim's check, the attacked splits and the transfer surrogate
(its recipe, trained through :func:`medsec.training.job.train_classifier`)."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from medsec.attacks.registry import MULTILABEL_ATTACKS, multilabel_refusal
from medsec.config import MedSecConfig
from medsec.data.types import ImageDataset, LoadedDataset
from medsec.errors import ConfigError, DataError
from medsec.models.checks import check_classifier
from medsec.stages import classifier
from medsec.training.config import ClassifierRecipe


def splits(cfg: MedSecConfig, data: LoadedDataset) -> tuple[ImageDataset, ImageDataset]:
    """The test split attacked (its first ``attack.n_examples``) and the train split a
    ``uap`` is fitted on, truncated to ``dataset.max_eval`` / ``dataset.max_train``."""
    return classifier.split(cfg, data, "test"), classifier.split(cfg, data, "train")


def require_multilabel_support(cfg: MedSecConfig, data: LoadedDataset) -> None:
    """On multi-label data (multi-hot labels, several findings per image): one ConfigError
    naming every ``attack.attacks[<i>]`` that cannot run there and why (targeted specs,
    deepfool, cw, one_pixel, uap), raised before any work; nothing on single-label data."""
    if data.task != "multilabel":
        return
    problems = [
        f"attack.attacks[{i}] ({spec.id}): {reason}"
        for i, spec in enumerate(cfg.attack.attacks)
        if (reason := multilabel_refusal(spec.name, spec.targeted)) is not None
    ]
    if problems:
        raise ConfigError(
            f"{'; '.join(problems)} - not defined for multi-label data ({data.name}: "
            f"{data.num_classes} findings per image); remove these entries (untargeted "
            f"{', '.join(MULTILABEL_ATTACKS)} run on it; see README, Your own data)")


def check_victim(cfg: MedSecConfig, data: LoadedDataset, model: nn.Module,
                 checkpoint: str | Path) -> None:
    """ConfigError when a configured attack cannot run on multi-label data
    (:func:`require_multilabel_support`); DataError (with the attack core's reason) if the
    model or the test images cannot be attacked: probabilities instead of logits, a dense
    output, pixels outside [0, 1], multi-hot labels whose width is not the model's."""
    require_multilabel_support(cfg, data)
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
