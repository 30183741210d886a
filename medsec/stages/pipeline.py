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


def _csv_plot(path: str, x: str, y: str, template: str | None = None) -> dict[str, Any]:
    """DVC's entry for a plot of a CSV (not cached) with axes; an image plot is its path."""
    return {path: {"cache": False, **({"template": template} if template else {}), "x": x, "y": y}}


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
    plots: tuple[str | dict[str, Any], ...] = ()  # DVC entries (images: cached paths)
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
                                 "params": list(self.params), "outs": list(self.outs),
                                 "metrics": [{path: {"cache": False}} for path in self.metrics],
                                 "plots": list(self.plots)}
        return {key: value for key, value in entry.items() if value or key == "deps"}


def _stage(name: str, flow: str, params: str, deps: str = "", code: str = "", outs: str = "",
           metrics: str = "", plots: tuple[str | dict[str, Any], ...] = (), **flags: bool) -> Stage:
    """A :class:`Stage` from space-separated lists. ``flow`` ``"x:f"`` is ``flows.x:f``;
    ``deps`` are the data inputs and capability packages; the code deps follow: the flow's
    file, then ``code`` (``tasks/<m>`` and ``stages/<m>`` modules, as ``.py`` files)."""
    module = flow.split(":")[0]
    files = [f"flows/{module}.py"] + [f"{m}.py".replace("stages/", "medsec/stages/")
                                      for m in code.split()]
    return Stage(name, f"flows.{flow}", tuple(params.split()), (*deps.split(), *files),
                 tuple(outs.split()), tuple(metrics.split()), plots, **flags)


_P = PREPARED_DIR
_CLF = f"{_P} models/classifier.pt"
_CLASSIFIER = "seed dataset model train"
STAGES: tuple[Stage, ...] = (
    _stage("data", "data:data_flow", "dataset phantoms",
           "data " + " ".join(f"medsec/data/{m}.py" for m in ("phantoms", "medmnist", "registry",
                                                               "prepare", "types")),
           "tasks/common stages/data", outs=_P, in_benchmark=True),
    _stage("validate", "validate:validate_flow", "dataset validation", f"{_P} medsec/data",
           "tasks/validate stages/validation", outs="reports/validation",
           metrics="metrics/validation.json", in_benchmark=True),
    _stage("train", "train:train_flow", _CLASSIFIER,
           f"{_P} reports/validation medsec/models medsec/training",
           "tasks/train stages/classifier", outs="models/classifier.pt models/classifier.json",
           metrics="metrics/train.json", in_benchmark=True, progress=True,
           plots=(_csv_plot("plots/train_history.csv", "epoch", "val_auc"),)),
    _stage("evaluate", "evaluate:evaluate_flow", "dataset",
           f"{_CLF} medsec/metrics/classification.py medsec/training medsec/viz.py",
           "tasks/train stages/classifier", metrics="metrics/evaluate.json", in_benchmark=True,
           plots=("plots/confusion.png", "plots/samples.png")),
    _stage("federated", "federated:federated_flow", f"{_CLASSIFIER} federated",
           f"{_P} reports/validation medsec/federated medsec/training",
           "tasks/federated stages/federated stages/classifier", outs="models/federated.pt",
           metrics="metrics/federated.json", deployed=True,
           plots=(_csv_plot("plots/federated_history.csv", "round", "test_acc"),)),
    _stage("deepfake", "deepfake:deepfake_flow", f"{_CLASSIFIER} deepfake",
           f"{_CLF} medsec/deepfakes medsec/metrics/generative.py medsec/training",
           "tasks/deepfake stages/deepfake stages/classifier", outs="outputs/deepfakes",
           metrics="metrics/deepfake.json", deployed=True),
    _stage("defense", "defense:defense_flow", f"{_CLASSIFIER} defense",
           f"{_CLF} medsec/defenses medsec/attacks medsec/models medsec/training",
           "tasks/defense tasks/attack tasks/train stages/defense stages/classifier",
           outs="models/defended reports/defense", metrics="metrics/defense.json",
           deployed=True),
    _stage("privacy", "privacy:privacy_flow", "privacy seed dataset model train",
           f"{_P} reports/validation medsec/privacy medsec/training medsec/metrics/privacy.py",
           "tasks/privacy tasks/train stages/privacy stages/classifier", outs="reports/privacy",
           metrics="metrics/privacy.json", deployed=True),
    _stage("audit", "privacy:audit_flow", "privacy seed dataset", dvc=False),
    _stage("attack", "attack:attack_flow", "attack dataset train",
           f"{_CLF} models/classifier.json medsec/attacks medsec/metrics/robustness.py "
           "medsec/metrics/image_quality.py medsec/models/checks.py medsec/models/guard.py "
           "medsec/training/predict.py medsec/viz.py",
           "tasks/attack stages/attack stages/classifier",
           outs="outputs/adversarial", metrics="metrics/attack.json", in_benchmark=True,
           deployed=True, plots=(_csv_plot("plots/robustness_curve.csv", "eps", "robust_acc",
                                           "scatter"), "plots/robustness_curve.png")),
    _stage("segmentation", "segmentation:segmentation_flow", "seed dataset phantoms segmentation",
           f"{_P} medsec/segmentation medsec/attacks medsec/training medsec/models "
           "medsec/defenses/training.py medsec/data medsec/metrics/image_quality.py medsec/viz.py",
           "tasks/segmentation tasks/common tasks/train stages/segmentation",
           outs="models/segmenter.pt outputs/segmentation", metrics="metrics/segmentation.json",
           deployed=True, plots=(_csv_plot("plots/segmentation_curve.csv", "eps", "dice", "linear"),
                                 "plots/segmentation_curve.png")),
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
