"""Training and evaluation tasks, and the Lightning callback that streams epochs to MLflow."""

from __future__ import annotations

from lightning.pytorch.callbacks import Callback
from prefect import task

from medsec.config import MedSecConfig
from medsec.data.types import LoadedDataset
from medsec.stages import classifier as stage
from medsec.training.job import Evaluation, TrainedClassifier, evaluate_classifier
from tasks.tracking import finite_metrics


class MlflowEpochLogger(Callback):
    """Log each epoch's train loss and validation metrics to the active MLflow run through
    Lightning's ``MLFlowLogger`` (metric histories with ``step`` = epoch; NaN/inf skipped)."""

    def __init__(self) -> None:
        self._logger = None

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        import mlflow

        active = mlflow.active_run()
        if not pl_module.history or active is None:
            return
        if self._logger is None or self._logger.run_id != active.info.run_id:
            from lightning.pytorch.loggers import MLFlowLogger

            self._logger = MLFlowLogger(tracking_uri=mlflow.get_tracking_uri(),
                                        run_id=active.info.run_id)
        record = dict(pl_module.history[-1])
        epoch = int(record.pop("epoch"))
        self._logger.log_metrics(finite_metrics(record), step=epoch)


@task(name="train-classifier")
def train_task(cfg: MedSecConfig, data: LoadedDataset, progress: bool = False) -> TrainedClassifier:
    return stage.train(cfg, data, callbacks=[MlflowEpochLogger()], progress=progress)


@task(name="evaluate-classifier")
def evaluate_task(cfg: MedSecConfig, data: LoadedDataset, model, split: str = "test") -> Evaluation:
    return evaluate_classifier(model, stage.split(cfg, data, split), data.num_classes,
                               prefix=f"{split}_")
