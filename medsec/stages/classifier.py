"""Config -> classifier recipe and fit strategy (plain or DP-SGD), and the train/evaluate calls."""

from __future__ import annotations

from collections.abc import Sequence

from lightning.pytorch.callbacks import Callback

from medsec.config import MedSecConfig
from medsec.data.types import ImageDataset, LoadedDataset
from medsec.training.config import ClassifierRecipe
from medsec.training.job import FitStrategy, TrainedClassifier, train_classifier
from medsec.training.module import ClassifierModule


def recipe(cfg: MedSecConfig) -> ClassifierRecipe:
    """The classifier recipe of ``cfg``: ``model``, ``train``, ``seed`` and the split limits
    ``dataset.max_train`` / ``dataset.max_eval``."""
    return ClassifierRecipe(model=cfg.model, train=cfg.train, seed=cfg.seed,
                            max_train=cfg.dataset.max_train, max_eval=cfg.dataset.max_eval)


def split(cfg: MedSecConfig, data: LoadedDataset, name: str) -> ImageDataset:
    """Split ``name`` truncated to ``dataset.max_train`` / ``dataset.max_eval``."""
    return recipe(cfg).split(data, name)


def fit_strategy(cfg: MedSecConfig) -> FitStrategy:
    """DP-SGD when ``privacy.dp.enabled``, else the plain fit
    (:func:`medsec.privacy.training.fit_strategy`; Opacus imported only when called)."""
    from medsec.privacy.training import fit_strategy

    return fit_strategy(cfg.privacy.dp)


def train(cfg: MedSecConfig, data: LoadedDataset, callbacks: Sequence[Callback] = (),
          progress: bool = False, module: ClassifierModule | None = None) -> TrainedClassifier:
    """Train the configured classifier (DP-SGD with ``privacy.dp.enabled``)."""
    return train_classifier(recipe(cfg), data, callbacks, progress, module, fit_strategy(cfg))


def require_single_label(data: LoadedDataset, stage: str) -> None:
    """ConfigError when ``data`` is multi-label (several findings per image): ``stage``
    supports one class per image only."""
    if data.task == "multilabel":
        from medsec.errors import ConfigError

        raise ConfigError(f"dataset.path: {data.name} is multi-label ({data.num_classes} "
                          f"findings per image); the {stage} stage supports single-label data "
                          "only (see README, Your own data)")


def clinical_metrics(cfg: MedSecConfig, data: LoadedDataset, model, val_logits,
                     test_logits) -> dict[str, float]:
    """The evaluate stage's extra columns of the trust report: for a binary (single-label) task the
    test sensitivity/specificity at the threshold chosen on the validation split (Youden's J;
    ``val_threshold``), and accuracy under the MedMNIST-C corruptions at 5 severities
    (``corruption_acc_mean``/``_worst`` and one ``corruption_<name>_s<k>_acc`` each) on the
    test split (truncated to ``dataset.max_eval``). Logits (N, K) of the val/test splits."""
    import torch

    from medsec.metrics.corruptions import corruption_accuracy
    from medsec.metrics.threshold import operating_point
    from medsec.training.predict import predict_logits

    out: dict[str, float] = {}
    val, test = split(cfg, data, "val"), split(cfg, data, "test")
    if (data.task == "multiclass" and data.num_classes == 2
            and len(set(val.labels.tolist())) == 2):
        out |= operating_point(torch.softmax(val_logits.double(), 1)[:, 1].numpy(), val.labels,
                               torch.softmax(test_logits.double(), 1)[:, 1].numpy(),
                               test.labels)
    return out | corruption_accuracy(lambda x: predict_logits(model, x), test.images,
                                     test.labels, seed=cfg.seed)
