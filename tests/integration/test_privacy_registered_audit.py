"""The checkpoint audit of a REGISTERED model: ``models:/medsec-<dataset>-<model>@champion``
resolves (real SQLite MLflow store) to the checkpoint its training run logged, and audits it
exactly as the file itself (oracle: the audit of the path). Tiny: SYNTHETIC phantoms, 1 epoch,
loss attack (~30 s on 1 core)."""

from __future__ import annotations

import pytest
import torch

import mlflow
from flows.privacy import audit_flow
from medsec.errors import ConfigError

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]

OVERRIDES = [
    "train.epochs=1", "train.num_threads=1", "privacy.audit.attacks=[loss]",
    "privacy.audit.declared_attack=loss", "privacy.audit.num_members=48",
    "privacy.audit.num_nonmembers=40", "privacy.audit.num_population=16",
]


def test_audit_a_registered_model_as_its_checkpoint(tmp_path, monkeypatch, phantom_dir,
                                                    tracking_uri):
    from medsec.stages import classifier
    from medsec.training.checkpoint import save_classifier
    from medsec.training.job import train_classifier
    from tasks.common import load_config_task, load_dataset_task
    from tasks.models import log_classifier, registered_name
    from tasks.tracking import log_artifact, tracked_run

    monkeypatch.chdir(tmp_path)
    overrides = [f"dataset.data_dir={phantom_dir}", *OVERRIDES]
    cfg = load_config_task.fn(preset="tiny", overrides=overrides)
    data = load_dataset_task.fn(cfg)
    trained = train_classifier(classifier.recipe(cfg), data)
    ckpt = save_classifier(tmp_path / "models" / "classifier.pt", trained.model, trained.meta)
    with tracked_run("train", cfg, data.version, run_name="train-registered") as train_run:
        log_artifact(ckpt, "model")  # what the train stage logs and registers
        log_classifier(trained.model, torch.from_numpy(data.splits["val"].images[:8]),
                       data.name, cfg.model.name, alias="champion")
    name = registered_name(data.name, cfg.model.name)

    by_path = audit_flow(preset="tiny", overrides=overrides, checkpoint=str(ckpt))
    uri = f"models:/{name}@champion"
    by_model = audit_flow(preset="tiny", overrides=[*overrides,
                                                     f"privacy.audit.checkpoint={uri}"])
    assert by_model["checkpoint"] == uri
    assert by_model["metrics"] == by_path["metrics"]  # the same model, members, attack
    assert by_model["metrics"]["mia_n_members"] == 48
    mlflow.set_tracking_uri(tracking_uri)
    tags = mlflow.get_run(by_model["run_id"]).data.tags
    path_tags = mlflow.get_run(by_path["run_id"]).data.tags
    assert tags["medsec.source_run_id"] == train_run.info.run_id
    assert tags["medsec.privacy.checkpoint"] == uri and tags["medsec.audit"] == "checkpoint"
    assert tags["medsec.privacy.checkpoint_md5"] == path_tags["medsec.privacy.checkpoint_md5"]
    assert (tmp_path / "reports" / "privacy_audit" / f"{name}-champion.json").exists()

    with pytest.raises(ConfigError, match=f"models:/{name}@robust is not registered"):
        audit_flow(preset="tiny", overrides=overrides, checkpoint=f"models:/{name}@robust")
