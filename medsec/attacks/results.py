"""What the attack stage reports: one :class:`AttackPoint` per attack and epsilon, the
image-scaling demo and the whole :class:`SuiteResult` with its flat metrics and curve rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from medsec.attacks.config import AttackSpec, grey_levels
from medsec.metrics.robustness import robust_correct

TIMING_METRICS = ("seconds_per_image", "fit_seconds", "seconds")
"""Wall-clock numbers: logged to MLflow, kept out of files (not reproducible)."""


def worst_case_stem(norm: str, eps: float) -> str:
    """Metric stem of a per-example worst case: ``worst_case_eps<k>`` for L-inf (names kept
    from before), ``worst_case_<norm>_eps<k>`` otherwise (L2 0.5 -> ``worst_case_l2_eps128``)."""
    return f"worst_case_{'' if norm == 'linf' else norm + '_'}{point_key(eps)}"


def point_key(eps: float | None) -> str:
    """``eps<k>`` (k = grey levels) for a budget, ``unbounded`` for none."""
    return "unbounded" if eps is None else f"eps{grey_levels(eps)}"


@dataclass
class AttackPoint:
    """One attack at one epsilon over the attacked examples.

    ``adversarial`` float32 (N, C, H, W) in [0, 1]; ``adv_pred`` (N,) the victim's predictions
    on it; ``targets`` (N,) for targeted attacks; ``params`` the resolved constructor
    parameters; ``metrics`` those of :func:`medsec.attacks.scoring.evaluate_attack` (plus
    ``fooling_rate``, ``fit_fooling_rate`` and ``fit_seconds`` for UAP).
    """

    spec: AttackSpec
    eps: float | None
    norm: str
    params: dict[str, Any]
    metrics: dict[str, float]
    adversarial: np.ndarray
    adv_pred: np.ndarray
    targets: np.ndarray | None = None

    @property
    def key(self) -> str:
        return point_key(self.eps)

    @property
    def name(self) -> str:
        """``<spec id>_<key>``, e.g. ``pgd_eps8``: file stem and metric prefix."""
        return f"{self.spec.id}_{self.key}"

    @property
    def step(self) -> int:
        """MLflow step: the epsilon in grey levels (0 when unbounded)."""
        return 0 if self.eps is None else grey_levels(self.eps)


@dataclass
class ScalingDemo:
    """Image-scaling attack results: large ``source``/``adversarial`` (n, C, S, S), the
    ``target`` and the pipeline's ``downscaled`` view (n, C, h, w), labels and predictions."""

    metrics: dict[str, float]
    source: np.ndarray
    adversarial: np.ndarray
    target: np.ndarray
    downscaled: np.ndarray
    source_labels: np.ndarray
    target_labels: np.ndarray
    pred: np.ndarray
    source_indices: np.ndarray
    target_indices: np.ndarray


@dataclass
class SuiteResult:
    """Everything the attack stage reports. ``images`` (N, C, H, W), ``labels``/``indices``/
    ``clean_pred`` (N,) describe the attacked test examples, ``num_classes`` the victim's K."""

    images: np.ndarray
    labels: np.ndarray
    indices: np.ndarray
    clean_pred: np.ndarray
    num_classes: int
    points: list[AttackPoint] = field(default_factory=list)
    worst_case: list[dict[str, Any]] = field(default_factory=list)
    masking_flags: list[str] = field(default_factory=list)
    transfer: list[dict[str, Any]] = field(default_factory=list)
    image_scaling: ScalingDemo | None = None

    @property
    def clean_acc(self) -> float:
        return float(robust_correct(self.labels, self.clean_pred).mean())  # exact match

    def tensors(self) -> tuple[Tensor, Tensor]:
        """The attacked examples as tensors (sharing memory): images (N, C, H, W), labels."""
        return torch.from_numpy(self.images), torch.from_numpy(self.labels)

    def metrics(self, timings: bool = False) -> dict[str, float]:
        """Flat lower_snake_case metrics: ``clean_acc``, ``<attack>_eps<k>_robust_acc``, ...,
        ``worst_case_eps<k>_robust_acc`` (L-inf), ``worst_case_l2_eps<k>_robust_acc`` (L2,
        k = round(eps*255): L2 0.5 -> eps128), ``transfer_<attack>_eps<k>_victim_robust_acc``,
        ``image_scaling_success_rate``; wall-clock numbers only with ``timings``."""
        out: dict[str, float] = {
            "clean_acc": self.clean_acc,
            "n_examples": float(len(self.labels)),
            "gradient_masking_flags": float(len(self.masking_flags)),
        }
        for point in self.points:
            out.update(_prefixed(point.name, point.metrics, timings))
        for row in self.worst_case:
            stem = worst_case_stem(row.get("norm", "linf"), row["eps"])
            out[f"{stem}_robust_acc"] = row["robust_acc"]
            out[f"{stem}_attack_success_rate"] = row["attack_success_rate"]
        for row in self.transfer:
            values = {k: v for k, v in row.items() if isinstance(v, float) and k != "eps"}
            out.update(
                _prefixed(f"transfer_{row['attack']}_{point_key(row['eps'])}", values, timings)
            )
        if self.image_scaling is not None:
            out.update(_prefixed("image_scaling", self.image_scaling.metrics, timings))
        return out

    def curve_rows(self) -> list[dict[str, Any]]:
        """Robustness curve: rows ``{attack, eps, robust_acc, norm}`` (eps in pixel units of
        the norm; eps 0 is the clean accuracy) for every eps-bounded attack and the worst
        case of each norm."""
        def row(attack: str, eps: float, acc: float, norm: str) -> dict[str, Any]:
            return {"attack": attack, "eps": eps, "robust_acc": acc, "norm": norm}

        rows: list[dict[str, Any]] = []
        seen: set[str] = set()
        for p in self.points:
            if p.eps is None:
                continue
            if p.spec.id not in seen:
                seen.add(p.spec.id)
                rows.append(row(p.spec.id, 0.0, self.clean_acc, p.norm))
            rows.append(row(p.spec.id, p.eps, p.metrics["robust_acc"], p.norm))
        for norm in dict.fromkeys(r.get("norm", "linf") for r in self.worst_case):
            rows.append(row("worst_case", 0.0, self.clean_acc, norm))
            rows += [row("worst_case", r["eps"], r["robust_acc"], norm) for r in self.worst_case
                     if r.get("norm", "linf") == norm]
        return rows


def _prefixed(prefix: str, metrics: dict[str, float], timings: bool) -> dict[str, float]:
    return {
        f"{prefix}_{k}": float(v)
        for k, v in metrics.items()
        if (timings or k not in TIMING_METRICS) and k not in ("n_examples", "clean_acc")
    }
