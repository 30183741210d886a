"""Plain run records (what the report reads) and the row keys derived from their tags/params."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TAG = "medsec."


@dataclass(frozen=True)
class RunRecord:
    """One finished MLflow run as plain data.

    ``metrics`` latest value per key; ``params`` as MLflow stores them (strings);
    ``start_time`` milliseconds since the epoch; ``artifacts`` local copies of the few
    artifacts the report shows (MLflow artifact path -> file).
    """

    run_id: str
    tags: dict[str, str]
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    start_time: int = 0
    end_time: int | None = None
    artifacts: dict[str, Path] = field(default_factory=dict)

    def tag(self, name: str, default: str = "") -> str:
        """The ``medsec.<name>`` tag (``default`` when absent)."""
        return self.tags.get(TAG + name, default)

    @property
    def stage(self) -> str:
        return self.tag("stage")

    @property
    def dataset(self) -> str:
        return self.tag("dataset", "unknown")

    @property
    def model(self) -> str:
        return self.tag("model", "unknown")

    @property
    def data_version(self) -> str:
        return self.tag("data_version", "unknown")

    @property
    def commit(self) -> str:
        return self.tag("git_commit", "unknown")

    @property
    def seconds(self) -> float | None:
        """Wall-clock seconds of the run (None while unknown)."""
        if self.end_time is None or not self.start_time:
            return None
        return (self.end_time - self.start_time) / 1000.0

    def metric(self, name: str) -> float | None:
        value = self.metrics.get(name)
        return None if value is None else float(value)

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "tags": dict(self.tags), "metrics": dict(self.metrics),
                "params": dict(self.params), "start_time": self.start_time,
                "end_time": self.end_time}


TRAINING_DEFENSES = {"pgd_at": "PGD-AT", "trades": "TRADES", "fast_fgsm_at": "fast-AT",
                     "fast_at": "fast-AT"}
"""Defense names of the defense stage that are training recipes, and their row labels."""

CLASSIFIER_STAGES = ("train", "evaluate", "attack", "defense", "privacy", "federated")
"""Stages whose runs become leaderboard rows; ``segmentation`` and ``deepfake`` have tables."""


def _dp_label(eps: str) -> str:
    try:
        return f"DP ε={float(eps):g}"
    except ValueError:
        return f"DP {eps}"


def recipe(record: RunRecord) -> str | None:
    """The training recipe (row label) a classifier-stage run belongs to, None for runs that
    are no row (the privacy sweep's summary run, other stages).

    standard (train/evaluate/attack, the defense stage's undefended model), DP ε=<target> (train
    stage with ``privacy.dp.enabled``, privacy sweep points ``dp-eps<k>``), PGD-AT / TRADES /
    fast-AT and ``input transform: <name>`` etc. (defense stage), ``standard (privacy sweep)``
    (the sweep's non-private model, trained for ``privacy.epochs``), federated, federated+DP.
    """
    stage = record.stage
    if record.tag("task") == "segmentation":
        return None
    if stage == "attack" and record.tag("attack", "suite") != "suite":
        return None  # the suite's per-attack child runs: the suite run holds the worst case
    if stage in ("train", "evaluate", "attack"):
        if record.params.get("privacy.dp.enabled", "False") == "True":
            return _dp_label(record.params.get("privacy.dp.target_epsilon", "?"))
        return "standard"
    if stage == "defense":
        key = record.tag("defense", "undefended")
        if key == "undefended":
            return "standard"
        name = record.tag("defense.name", key)
        if name in TRAINING_DEFENSES:
            return TRAINING_DEFENSES[name] + ("" if key == name else f" ({key})")
        kind = record.tag("defense.kind", "defense")
        return f"{kind}: {key}"
    if stage == "privacy" and record.tag("audit") == "checkpoint":
        # an audit of an existing checkpoint (e.g. models/classifier.pt): that model's row
        defense = record.tag("defense")
        if defense:
            return TRAINING_DEFENSES.get(defense, f"defense: {defense}")
        label = record.tag("privacy", "none")
        return "standard" if label == "none" else _dp_label(label[len("dp-eps"):])
    if stage == "privacy":
        label = record.tag("privacy", "")
        if label in ("", "sweep"):
            return None
        if label == "none":
            return "standard (privacy sweep)"
        if label.startswith("dp-eps"):
            return _dp_label(label[len("dp-eps"):])
        return f"privacy: {label}"
    if stage == "federated":
        private = record.tag("privacy", "none") not in ("", "none")
        strategy = record.tag("federated.strategy", "fedavg")
        base = "federated+DP" if private else "federated"
        return base if strategy == "fedavg" else f"{base} ({strategy})"
    return None
