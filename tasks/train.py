"""Training and evaluation tasks, and the Lightning callback that streams epochs to MLflow."""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback
from prefect import task

from medsec.config import MedSecConfig
from medsec.data.types import LoadedDataset
from medsec.stages import classifier as stage
from medsec.training.job import Evaluation, TrainedClassifier, evaluate_classifier
from tasks.tracking import log_metrics


class MlflowEpochLogger(Callback):
    """Log each epoch's train loss and validation metrics to the active MLflow run."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if pl_module.history:
            record = dict(pl_module.history[-1])
            epoch = int(record.pop("epoch"))
            log_metrics(record, step=epoch)


@task(name="train-classifier")
def train_task(cfg: MedSecConfig, data: LoadedDataset, progress: bool = False) -> TrainedClassifier:
    return stage.train(cfg, data, callbacks=[MlflowEpochLogger()], progress=progress)


@task(name="evaluate-classifier")
def evaluate_task(cfg: MedSecConfig, data: LoadedDataset, model, split: str = "test") -> Evaluation:
    return evaluate_classifier(model, stage.split(cfg, data, split), data.num_classes,
                               prefix=f"{split}_")
