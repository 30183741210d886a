"""Trained classifiers the MLflow way: ``mlflow.pytorch.log_model`` with a signature and an
input example, registered as ``medsec-<dataset>-<model>`` with an alias.

The logged model is the whole pixel-space network (normalisation is its first layer): input
float32 images (N, C, H, W) in [0, 1], output logits (N, num_classes), N dynamic. It is saved
with ``torch.export`` (MLflow's default ``pt2`` format: a graph and tensors, no pickle and no
MedSec code needed to load it), falling back to pickle only for a network export cannot trace.
Aliases: ``champion`` is the train stage's latest model, ``robust`` the defense stage's
adversarially trained one; ``models:/medsec-<dataset>-<model>@champion`` loads it with
``mlflow.pyfunc.load_model`` or serves it with ``mlflow models serve``.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import numpy as np
import torch
from torch import nn

from tasks.tracking import set_tags

N_EXAMPLE = 2  # images in the input example (the serving payload's ready-made body)


def registered_name(dataset: str, model: str) -> str:
    """``medsec-<dataset>-<model>`` in lower case, other characters as dashes."""
    return re.sub(r"[^a-z0-9_.-]+", "-", f"medsec-{dataset}-{model}".lower())


def _requirements() -> list[str]:
    """Pinned requirements for the serving environment (passing them skips MLflow's 8-10 s
    inference of them in a subprocess); local version labels such as ``+cpu`` dropped."""
    import mlflow

    return [f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}",
            f"numpy=={np.__version__}"]


def log_classifier(model: nn.Module, images: torch.Tensor, dataset: str, model_name: str,
                   alias: str | None = None, name: str = "model") -> Any:
    """Log ``model`` to the active MLflow run and register it; returns MLflow's ModelInfo.

    ``images``: float32 (N, C, H, W) in [0, 1], N >= 1 (the first :data:`N_EXAMPLE` form the
    input example, all of them the signature's logits). With ``alias``, that alias of the
    registered model points at the new version. The run gets the tags
    ``medsec.registered_model`` and ``medsec.registered_version``.
    """
    import mlflow.pytorch
    from mlflow.models import infer_signature

    import mlflow

    model = copy.deepcopy(model).to("cpu").eval()  # the caller's model stays where it is
    example = images[:N_EXAMPLE].detach().to("cpu", torch.float32).contiguous()
    if example.ndim != 4 or float(example.min()) < 0.0 or float(example.max()) > 1.0:
        raise ValueError("log_classifier needs float32 images (N, C, H, W) in [0, 1]")
    with torch.no_grad():
        logits = model(example).numpy()
    x = example.numpy()
    registry = registered_name(dataset, model_name)
    kwargs = dict(name=name, signature=infer_signature(x, logits), input_example=x,
                  registered_model_name=registry, pip_requirements=_requirements())
    try:
        info = mlflow.pytorch.log_model(model, **kwargs)
    except Exception as exc:  # torch.export cannot trace every network
        if "export" not in f"{type(exc).__module__} {exc}".lower():
            raise
        info = mlflow.pytorch.log_model(model, serialization_format="pickle", **kwargs)
    version = str(info.registered_model_version)
    if alias:
        mlflow.MlflowClient().set_registered_model_alias(registry, alias, version)
    set_tags({"medsec.registered_model": registry, "medsec.registered_version": version})
    return info
