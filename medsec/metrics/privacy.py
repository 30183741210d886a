"""Membership-inference metrics: AUC, balanced accuracy, TPR at low FPR, log-log ROC figure.

Inputs are attack scores (higher = "member") for known members and known non-members. TPR at
a target FPR is read off the ROC with linear interpolation between its corner points (the ROC
achievable by randomising between two thresholds), never extrapolated. Resolution is limited
by the number of non-members: with ``n`` non-members the smallest non-zero FPR is ``1/n``, so
TPR at 0.1 % FPR needs well over 1000 non-members to mean much; ``mia_fpr_resolution`` (=1/n)
is reported next to it and a warning is logged when it is coarser than the target.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score, roc_curve

logger = logging.getLogger(__name__)

# Target FPRs and the metric-name suffix each is reported under.
LOW_FPRS: dict[float, str] = {0.001: "tpr_at_0.1pct_fpr", 0.01: "tpr_at_1pct_fpr"}


def _as_scores(member_scores: Sequence[float] | np.ndarray,
               nonmember_scores: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    members = np.asarray(member_scores, dtype=np.float64).ravel()
    nonmembers = np.asarray(nonmember_scores, dtype=np.float64).ravel()
    if len(members) == 0 or len(nonmembers) == 0:
        raise ValueError("need at least one member and one non-member score")
    if not (np.isfinite(members).all() and np.isfinite(nonmembers).all()):
        raise ValueError("membership scores contain NaN or infinite values")
    return members, nonmembers


def roc_points(member_scores: Sequence[float] | np.ndarray,
               nonmember_scores: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC corner points ``(fpr, tpr)``, both non-decreasing, from (0, 0) to (1, 1)."""
    members, nonmembers = _as_scores(member_scores, nonmember_scores)
    truth = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))]
    fpr, tpr, _ = roc_curve(truth, np.r_[members, nonmembers], drop_intermediate=False)
    return fpr, tpr


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target_fpr: float) -> float:
    """TPR at ``target_fpr`` on the ROC ``(fpr, tpr)`` (from :func:`roc_points`).

    Takes the highest TPR among points with FPR <= target and interpolates linearly toward the
    first point beyond the target.
    """
    if not 0 <= target_fpr <= 1:
        raise ValueError(f"target_fpr must be in [0, 1], got {target_fpr}")
    i = int(np.searchsorted(fpr, target_fpr, side="right")) - 1  # last point with fpr <= target
    if fpr[i] == target_fpr or i == len(fpr) - 1:
        return float(tpr[i])
    f0, f1, t0, t1 = fpr[i], fpr[i + 1], tpr[i], tpr[i + 1]
    return float(t0 + (t1 - t0) * (target_fpr - f0) / (f1 - f0))


def mia_metrics(member_scores: Sequence[float] | np.ndarray,
                nonmember_scores: Sequence[float] | np.ndarray,
                prefix: str = "mia_") -> dict[str, float]:
    """``{prefix}auc``, ``balanced_acc`` (best threshold), ``tpr_at_0.1pct_fpr``,
    ``tpr_at_1pct_fpr``, ``fpr_resolution`` (1 / non-members), ``num_members``,
    ``num_nonmembers``; AUC counts ties as one half."""
    members, nonmembers = _as_scores(member_scores, nonmember_scores)
    fpr, tpr = roc_points(members, nonmembers)
    truth = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))]
    out = {f"{prefix}auc": float(roc_auc_score(truth, np.r_[members, nonmembers])),
           f"{prefix}balanced_acc": float(0.5 * (1.0 + np.max(tpr - fpr)))}
    resolution = 1.0 / len(nonmembers)
    for target, name in LOW_FPRS.items():
        out[f"{prefix}{name}"] = tpr_at_fpr(fpr, tpr, target)
        if resolution > target:
            logger.warning("%s%s: only %d non-members (FPR resolution %.3g > %.3g); the value "
                           "is interpolated from the ROC's first step", prefix, name,
                           len(nonmembers), resolution, target)
    return out | {f"{prefix}fpr_resolution": resolution,
                  f"{prefix}num_members": float(len(members)),
                  f"{prefix}num_nonmembers": float(len(nonmembers))}


def plot_mia_roc(curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
                 title: str = "Membership inference ROC") -> Figure:
    """Log-log ROC figure, one line per attack: ``{name: (member_scores, nonmember_scores)}``.

    The legend carries AUC and TPR at 1 % FPR; the chance diagonal is dashed. Returns the
    Figure (not saved, not shown).
    """
    if not curves:
        raise ValueError("no ROC curves to plot")
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot(1, 1, 1)
    smallest = 1.0
    for name, (members, nonmembers) in curves.items():
        fpr, tpr = roc_points(members, nonmembers)
        m = mia_metrics(members, nonmembers, prefix="")
        smallest = min(smallest, 1.0 / len(np.ravel(nonmembers)), 1.0 / len(np.ravel(members)))
        ax.plot(fpr, tpr, label=f"{name} (AUC {m['auc']:.3f}, TPR@1%FPR "
                                f"{m['tpr_at_1pct_fpr']:.3f})")
    lo = min(1e-3, 0.5 * smallest)
    ax.plot([lo, 1], [lo, 1], "k--", lw=0.8, label="chance")
    ax.set(xscale="log", yscale="log", xlim=(lo, 1), ylim=(lo, 1), xlabel="false positive rate",
           ylabel="true positive rate", title=title)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    return fig
