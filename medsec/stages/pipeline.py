"""The pipeline declared once: every stage's flow, params, deps, outs, metrics and plots.

The CLI (``medsec stage NAME``), the benchmark flow (``in_benchmark``), ``dvc.yaml``
(:func:`dvc_yaml`, checked by a test) and ``prefect.yaml`` (checked by a test) come from
:data:`STAGES`. Flows are named as ``"module:function"`` strings, resolved by the callers
(:func:`resolve_flow` lives in ``flows``), so this layer imports no flow.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import yaml

from medsec.io import write_text

PARAMS_FILE = "params.yaml"
PREPARED_DIR = "prepared"
SCORECARD_DIR = "reports/scorecards"
"""Full stage metrics (timings, per-attack detail) beside the headline-only ``metrics/``."""
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
    ``dvc``: is a DVC stage (the audit runs on demand on any checkpoint, so it is not);
    ``headline``: the metrics-file keys DVC sees (``fnmatch`` patterns on ``/``-joined key
    paths, :func:`headline_metrics`); the full scorecard goes to :attr:`scorecard`.
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
    headline: tuple[str, ...] = ()

    @property
    def scorecard(self) -> str | None:
        """``reports/scorecards/<metrics file>``: the full metrics (a plain out, not a DVC
        metric) of a stage with a :attr:`headline` declaration."""
        if not (self.headline and self.metrics):
            return None
        return f"{SCORECARD_DIR}/{Path(self.metrics[0]).name}"

    @property
    def entrypoint(self) -> str:
        """Prefect's form of ``flow``: ``flows/train.py:train_flow``."""
        module, func = self.flow.split(":")
        return f"{module.replace('.', '/')}.py:{func}"

    @property
    def cmd(self) -> str:
        return f"medsec stage {self.name} --config {PARAMS_FILE}"

    def dvc_entry(self) -> dict[str, Any]:
        # DVC renders CSV plots with Vega from a CDN (blank offline): CSVs are plain uncached
        # outs, only rendered images (PNG, copied beside DVC's HTML) are plots.
        csvs = [entry for entry in self.plots if isinstance(entry, dict)]
        images = [entry for entry in self.plots if isinstance(entry, str)]
        outs = [*self.outs, *([self.scorecard] if self.scorecard else []),
                *({path: {"cache": False}} for entry in csvs for path in entry)]
        entry: dict[str, Any] = {"cmd": self.cmd, "deps": list(self.deps),
                                 "params": list(self.params), "outs": outs,
                                 "metrics": [{path: {"cache": False}} for path in self.metrics],
                                 "plots": images}
        return {key: value for key, value in entry.items() if value or key == "deps"}


def _stage(name: str, flow: str, params: str, deps: str = "", code: str = "", outs: str = "",
           metrics: str = "", plots: tuple[str | dict[str, Any], ...] = (), headline: str = "",
           **flags: bool) -> Stage:
    """A :class:`Stage` from space-separated lists. ``flow`` ``"x:f"`` is ``flows.x:f``;
    ``deps`` are the data inputs and capability packages; the code deps follow: the flow's
    file, then ``code`` (``tasks/<m>`` and ``stages/<m>`` modules, as ``.py`` files);
    ``headline``: space-separated metric key patterns (:attr:`Stage.headline`)."""
    module = flow.split(":")[0]
    files = [f"flows/{module}.py"] + [f"{m}.py".replace("stages/", "medsec/stages/")
                                      for m in code.split()]
    return Stage(name, f"flows.{flow}", tuple(params.split()), (*deps.split(), *files),
                 tuple(outs.split()), tuple(metrics.split()), plots,
                 headline=tuple(headline.split()), **flags)


_P = PREPARED_DIR
_CLF = f"{_P} models/classifier.pt"
_CLASSIFIER = "seed dataset model train"
_PRIVACY_HEADLINE = ("test_acc", "test_auc", "epsilon", "epsilon_audit_lower", "mia_auc",
                     "mia_auc_ci_low", "mia_auc_ci_high", "mia_tpr_at_0.1pct_fpr",
                     "mia_tpr_at_1pct_fpr")
STAGES: tuple[Stage, ...] = (
    _stage("data", "data:data_flow", "dataset phantoms",
           "data " + " ".join(f"medsec/data/{m}.py" for m in ("phantoms", "medmnist", "registry",
                                                               "prepare", "types", "splits"))
           + " medsec/data/sources",
           "tasks/common stages/data", outs=_P, in_benchmark=True),
    _stage("validate", "validate:validate_flow", "dataset validation", f"{_P} medsec/data",
           "tasks/validate stages/validation", outs="reports/validation",
           metrics="metrics/validation.json", in_benchmark=True,
           headline="success n_hard_failures n_warnings n_images n_duplicate_images_across "
                    "n_patients_across n_studies_across n_near_duplicate_groups_across"),
    _stage("train", "train:train_flow", _CLASSIFIER,
           f"{_P} reports/validation medsec/models medsec/training",
           "tasks/train stages/classifier", outs="models/classifier.pt models/classifier.json",
           metrics="metrics/train.json", in_benchmark=True, progress=True,
           headline="best_epoch best_val_acc best_val_auc epsilon delta",
           plots=(_csv_plot("plots/train_history.csv", "epoch", "val_auc"),)),
    _stage("evaluate", "evaluate:evaluate_flow", "dataset",
           f"{_CLF} medsec/metrics/classification.py medsec/metrics/corruptions.py "
           "medsec/metrics/threshold.py medsec/training medsec/viz.py",
           "tasks/train stages/classifier", metrics="metrics/evaluate.json", in_benchmark=True,
           headline="test_acc test_auc test_f1 test_sensitivity test_specificity "
                    "corruption_acc_mean corruption_acc_worst",
           plots=("plots/confusion.png", "plots/samples.png")),
    _stage("federated", "federated:federated_flow", f"{_CLASSIFIER} federated privacy.audit",
           f"{_P} reports/validation medsec/federated medsec/training "
           "medsec/privacy/recipe_audit.py medsec/privacy/canary_audit.py",
           "tasks/federated stages/federated stages/classifier tasks/privacy stages/privacy",
           outs="models/federated.pt reports/federated",
           metrics="metrics/federated.json", deployed=True,
           headline="test_acc test_auc acc_gap_vs_centralized centralized_test_acc rounds "
                    "clients_failed epsilon gradinv_psnr gradinv_ssim "
                    "client_dp_epsilon_audit_lower client_dp_audit_epsilon "
                    "recipe_audit_*_mia_auc recipe_audit_*_mia_auc_ci_low "
                    "recipe_audit_*_mia_auc_ci_high recipe_audit_*_epsilon "
                    "recipe_audit_*_epsilon_audit_lower",
           plots=(_csv_plot("plots/federated_history.csv", "round", "test_acc"),)),
    _stage("deepfake", "deepfake:deepfake_flow", f"{_CLASSIFIER} deepfake",
           f"{_CLF} medsec/deepfakes medsec/metrics/generative.py medsec/training",
           "tasks/deepfake stages/deepfake stages/classifier", outs="outputs/deepfakes",
           metrics="metrics/deepfake.json", deployed=True,
           headline="detector_auc_seen detector_auc_unseen tamper_flip_rate fd_classifier "
                    "tstr_acc gen_mia_auc dp_eps*_epsilon dp_eps*_tstr_acc dp_eps*_gen_mia_auc "
                    "dp_eps*_epsilon_audit_lower"),
    _stage("defense", "defense:defense_flow", f"{_CLASSIFIER} defense",
           f"{_CLF} medsec/defenses medsec/attacks medsec/models medsec/training",
           "tasks/defense tasks/attack tasks/train stages/defense stages/classifier "
           "stages/applicability",
           outs="models/defended reports/defense", metrics="metrics/defense.json",
           deployed=True, headline="*/clean_acc */robust_acc */gradient_masking_flagged"),
    _stage("privacy", "privacy:privacy_flow", "privacy seed dataset model train",
           f"{_P} reports/validation medsec/privacy medsec/training medsec/metrics/privacy.py",
           "tasks/privacy tasks/train stages/privacy stages/classifier", outs="reports/privacy",
           metrics="metrics/privacy.json", deployed=True,
           headline=" ".join(f"*/{k}" for k in _PRIVACY_HEADLINE)),
    _stage("audit", "privacy:audit_flow", "privacy seed dataset", dvc=False),
    _stage("attack", "attack:attack_flow", "attack dataset train",
           f"{_CLF} models/classifier.json medsec/attacks medsec/metrics/robustness.py "
           "medsec/metrics/image_quality.py medsec/models/checks.py medsec/models/guard.py "
           "medsec/training/predict.py medsec/viz.py",
           "tasks/attack stages/attack stages/classifier stages/applicability",
           outs="outputs/adversarial", metrics="metrics/attack.json", in_benchmark=True,
           deployed=True, headline="clean_acc gradient_masking_flags worst_case_eps*_robust_acc "
                                   "worst_case_eps*_attack_success_rate "
                                   "worst_case_l2_eps*_robust_acc",
           plots=(_csv_plot("plots/robustness_curve.csv", "eps", "robust_acc", "scatter"),
                  "plots/robustness_curve.png")),
    _stage("segmentation", "segmentation:segmentation_flow", "seed dataset phantoms segmentation",
           f"{_P} medsec/segmentation medsec/attacks medsec/training medsec/models "
           "medsec/defenses/training.py medsec/data medsec/metrics/image_quality.py medsec/viz.py",
           "tasks/segmentation tasks/common tasks/train stages/segmentation",
           outs="models/segmenter.pt outputs/segmentation", metrics="metrics/segmentation.json",
           deployed=True, headline="clean/test_dice attacks/*/dice_adv "
           "attacks/*erase/target_success_rate attacks/*inject/target_success_rate "
           "defended/*/clean/test_dice defended/*/attacks/*/dice_adv",
           plots=(_csv_plot("plots/segmentation_curve.csv", "eps", "dice", "linear"),
                  "plots/segmentation_curve.png")),
    _stage("report", "report:report_flow", "tracking",
           f"{_P} medsec/report " + " ".join(f"metrics/{m}.json" for m in (
               "validation", "train", "evaluate", "federated", "deepfake", "defense", "privacy",
               "attack", "segmentation")),
           "tasks/report", outs="reports/trust_report.html reports/trust_report.md",
           metrics="metrics/leaderboard.json", deployed=True),
)
STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)


def get_stage(name: str) -> Stage:
    """The stage called ``name`` (ValueError listing the known names otherwise)."""
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise ValueError(f"unknown stage {name!r}; known: {', '.join(STAGE_NAMES)}")


def _leaves(tree: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _leaves(value, f"{path}/{key}" if path else str(key))
    else:
        yield path, tree


def count_leaves(tree: Any) -> int:
    """Leaf values of a metrics tree (lists count element by element, as DVC prints them)."""
    if isinstance(tree, dict):
        return sum(count_leaves(v) for v in tree.values())
    if isinstance(tree, list):
        return sum(count_leaves(v) for v in tree)
    return 1


def headline_metrics(stage: Stage, metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` (nested) reduced to the leaves whose ``/``-joined key path matches one of
    ``stage.headline`` (all of them without a declaration), structure kept."""
    if not stage.headline:
        return metrics
    out: dict[str, Any] = {}
    for path, value in _leaves(metrics):
        if any(fnmatchcase(path, pattern) for pattern in stage.headline):
            *parents, last = path.split("/")
            node = out
            for key in parents:
                node = node.setdefault(key, {})
            node[last] = value
    return out


def stage_of_metrics(path: str | Path) -> Stage | None:
    """The stage whose metrics file is named like ``path`` (``.../metrics/attack.json``)."""
    name = Path(path).name
    return next((s for s in STAGES if any(Path(m).name == name for m in s.metrics)), None)


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
