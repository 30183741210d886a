"""The pipeline declared once: every stage's flow, params, deps, outs, metrics and plots.

The CLI (``medsec stage NAME``), the benchmark flow (``in_benchmark``), ``dvc.yaml``
(:func:`dvc_yaml`, checked by a test) and ``prefect.yaml`` (checked by a test) come from
:data:`STAGES`. Flows are named as ``"module:function"`` strings, resolved by the callers
(:func:`resolve_flow` lives in ``flows``), so this layer imports no flow.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from medsec.io import write_text

PARAMS_FILE = "params.yaml"
PREPARED_DIR = "prepared"
"""The data stage's output: the dataset every later stage reads (``flows.outputs.PREPARED``)."""


@dataclass(frozen=True)
class Plot:
    """A DVC plot: a CSV (not cached, with axes) or an image (cached)."""

    path: str
    x: str | None = None
    y: str | None = None
    template: str | None = None

    def dvc_entry(self) -> str | dict[str, Any]:
        if self.x is None:
            return self.path
        opts: dict[str, Any] = {"cache": False}
        if self.template:
            opts["template"] = self.template
        return {self.path: opts | {"x": self.x, "y": self.y}}


@dataclass(frozen=True)
class Stage:
    """One pipeline stage: ``medsec stage <name>`` runs ``flow`` on ``params.yaml``.

    ``deps``/``outs``/``metrics``/``plots`` are repository-relative paths (DVC's view);
    ``in_benchmark``: run by ``medsec run`` (flows/benchmark.py), in table order;
    ``deployed``: has a Prefect deployment of its own in prefect.yaml (capability stages);
    ``dvc``: is a DVC stage (the audit runs on demand on any checkpoint, so it is not).
    """

    name: str
    flow: str
    params: tuple[str, ...]
    deps: tuple[str, ...] = ()
    outs: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    plots: tuple[Plot, ...] = ()
    in_benchmark: bool = False
    deployed: bool = False
    dvc: bool = True
    progress: bool = False

    @property
    def entrypoint(self) -> str:
        """Prefect's form of ``flow``: ``flows/train.py:train_flow``."""
        module, func = self.flow.split(":")
        return f"{module.replace('.', '/')}.py:{func}"

    @property
    def cmd(self) -> str:
        return f"medsec stage {self.name} --config {PARAMS_FILE}"

    def dvc_entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"cmd": self.cmd, "deps": list(self.deps),
                                 "params": list(self.params)}
        if self.outs:
            entry["outs"] = list(self.outs)
        if self.metrics:
            entry["metrics"] = [{path: {"cache": False}} for path in self.metrics]
        if self.plots:
            entry["plots"] = [plot.dvc_entry() for plot in self.plots]
        return entry


_P = PREPARED_DIR
_ATTACK_CODE = tuple(f"medsec/attacks/{m}.py" for m in ("base", "pgd", "fgsm", "noise"))
STAGES: tuple[Stage, ...] = (
    Stage("data", "flows.data:data_flow", ("dataset", "phantoms"),
          deps=("data", "medsec/data/phantoms.py", "medsec/data/medmnist.py",
                "medsec/data/registry.py", "medsec/data/prepare.py", "flows/data.py"),
          outs=(_P,), in_benchmark=True),
    Stage("validate", "flows.validate:validate_flow", ("dataset", "validation"),
          deps=(_P, "medsec/data", "flows/validate.py"),
          outs=("reports/validation",), metrics=("metrics/validation.json",),
          in_benchmark=True),
    Stage("train", "flows.train:train_flow", ("seed", "dataset", "model", "train"),
          deps=(_P, "reports/validation", "medsec/models", "medsec/training", "flows/train.py"),
          outs=("models/classifier.pt", "models/classifier.json"),
          metrics=("metrics/train.json",),
          plots=(Plot("plots/train_history.csv", x="epoch", y="val_auc"),),
          in_benchmark=True, progress=True),
    Stage("evaluate", "flows.evaluate:evaluate_flow", ("dataset",),
          deps=(_P, "models/classifier.pt", "medsec/metrics/classification.py",
                "flows/evaluate.py"),
          metrics=("metrics/evaluate.json",),
          plots=(Plot("plots/confusion.png"), Plot("plots/samples.png")), in_benchmark=True),
    Stage("federated", "flows.federated:federated_flow",
          ("seed", "dataset", "model", "train", "federated"),
          deps=(_P, "reports/validation", "medsec/federated", "medsec/training",
                "flows/federated.py", "tasks/federated.py"),
          outs=("models/federated.pt",), metrics=("metrics/federated.json",),
          plots=(Plot("plots/federated_history.csv", x="round", y="test_acc"),),
          deployed=True),
    Stage("deepfake", "flows.deepfake:deepfake_flow",
          ("seed", "dataset", "model", "train", "deepfake"),
          deps=(_P, "models/classifier.pt", "medsec/deepfakes", "medsec/metrics/generative.py",
                "flows/deepfake.py", "tasks/deepfake.py"),
          outs=("outputs/deepfakes",), metrics=("metrics/deepfake.json",), deployed=True),
    Stage("defense", "flows.defense:defense_flow",
          ("seed", "dataset", "model", "train", "defense"),
          deps=(_P, "models/classifier.pt", "medsec/defenses", "medsec/attacks",
                "medsec/training", "flows/defense.py", "tasks/defense.py"),
          outs=("models/defended", "reports/defense"), metrics=("metrics/defense.json",),
          deployed=True),
    Stage("privacy", "flows.privacy:privacy_flow",
          ("privacy", "seed", "dataset", "model", "train"),
          deps=(_P, "reports/validation", "medsec/privacy", "medsec/training",
                "medsec/metrics/privacy.py", "flows/privacy.py", "tasks/privacy.py"),
          outs=("reports/privacy",), metrics=("metrics/privacy.json",), deployed=True),
    Stage("audit", "flows.privacy:audit_flow", ("privacy", "seed", "dataset"), dvc=False),
    Stage("attack", "flows.attack:attack_flow", ("attack", "dataset", "train"),
          deps=(_P, "models/classifier.pt", "models/classifier.json", "medsec/attacks",
                "medsec/metrics/robustness.py", "medsec/metrics/image_quality.py",
                "flows/attack.py", "tasks/attack.py"),
          outs=("outputs/adversarial",), metrics=("metrics/attack.json",),
          plots=(Plot("plots/robustness_curve.csv", x="eps", y="robust_acc",
                      template="scatter"), Plot("plots/robustness_curve.png")),
          in_benchmark=True, deployed=True),
    Stage("segmentation", "flows.segmentation:segmentation_flow",
          ("seed", "dataset", "phantoms", "segmentation"),
          deps=(_P, "medsec/segmentation", *_ATTACK_CODE, "medsec/training/fit.py",
                "medsec/training/module.py", "medsec/defenses/training.py",
                "medsec/data/validation", "medsec/viz.py", "flows/segmentation.py",
                "tasks/segmentation.py"),
          outs=("models/segmenter.pt", "outputs/segmentation"),
          metrics=("metrics/segmentation.json",),
          plots=(Plot("plots/segmentation_curve.csv", x="eps", y="dice", template="linear"),
                 Plot("plots/segmentation_curve.png")),
          deployed=True),
)
STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)


def get_stage(name: str) -> Stage:
    """The stage called ``name`` (ValueError listing the known names otherwise)."""
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise ValueError(f"unknown stage {name!r}; known: {', '.join(STAGE_NAMES)}")


def benchmark_stages() -> tuple[Stage, ...]:
    """The stages ``medsec run`` runs, in order (data, validate, train, evaluate, attack)."""
    return tuple(s for s in STAGES if s.in_benchmark)


def dvc_yaml() -> dict[str, Any]:
    """``dvc.yaml``'s content (as a mapping) generated from :data:`STAGES`."""
    return {"stages": {s.name: s.dvc_entry() for s in STAGES if s.dvc}}


DVC_HEADER = ("# GENERATED from medsec/stages/pipeline.py by `python -m medsec.stages.pipeline`;\n"
              "# edit the table there. Every stage calls the same Prefect flow as `medsec run`.\n")


def write_dvc_yaml(path: str | Path = "dvc.yaml") -> Path:
    """Write :func:`dvc_yaml` to ``path`` (atomically)."""
    body = yaml.safe_dump(dvc_yaml(), sort_keys=False, default_flow_style=False, width=100)
    return write_text(path, DVC_HEADER + body)


if __name__ == "__main__":
    print(write_dvc_yaml())
