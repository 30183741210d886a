"""Membership-inference metrics with their uncertainty: AUC, TPR at low FPR, log-log ROC figure.

Inputs are attack scores (higher = "member") for known members and known non-members.

- ``auc``: ROC AUC (ties count one half) with a stratified percentile-bootstrap interval
  (members and non-members resampled separately, seeded, ``n_boot`` >= 1000 resamples).
- ``tpr_at_<x>pct_fpr``: the fraction of members above the threshold that flags at most
  ``floor(x% * n_nonmembers)`` non-members (a deterministic threshold: the ROC step, never
  interpolated), with a Clopper-Pearson (exact binomial) interval over the members. The
  interval covers the member sampling only; the threshold's own noise is what the resolution
  rule below guards against.
- Resolution: with ``n`` non-members an FPR of ``x`` expects ``n * x`` false positives. Below
  :data:`MIN_EXPECTED_FP` (10) the threshold rests on a handful of non-members and the TPR is
  not reported: the value is None (strict-JSON null), a reason is returned in
  :attr:`MiaSummary.null_reasons` and a warning is logged.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

logger = logging.getLogger(__name__)

# Target FPRs and the metric-name suffix each is reported under.
LOW_FPRS: dict[float, str] = {0.001: "tpr_at_0.1pct_fpr", 0.01: "tpr_at_1pct_fpr"}
MIN_EXPECTED_FP = 10.0
"""A TPR at FPR ``x`` needs ``n_nonmembers * x >= 10`` expected false positives."""
N_BOOT = 1000
CI_LEVEL = 0.95


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
    """TPR at ``target_fpr`` on the ROC ``(fpr, tpr)`` (from :func:`roc_points`), linearly
    interpolated between corners (the randomised-threshold ROC; for figures)."""
    if not 0 <= target_fpr <= 1:
        raise ValueError(f"target_fpr must be in [0, 1], got {target_fpr}")
    i = int(np.searchsorted(fpr, target_fpr, side="right")) - 1  # last point with fpr <= target
    if fpr[i] == target_fpr or i == len(fpr) - 1:
        return float(tpr[i])
    f0, f1, t0, t1 = fpr[i], fpr[i + 1], tpr[i], tpr[i + 1]
    return float(t0 + (t1 - t0) * (target_fpr - f0) / (f1 - f0))


def clopper_pearson(k: int, n: int, level: float = CI_LEVEL) -> tuple[float, float]:
    """Exact (Clopper-Pearson) two-sided interval for a binomial proportion ``k / n``."""
    from scipy.stats import beta

    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n and n > 0, got k={k}, n={n}")
    alpha = 1.0 - level
    low = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high


def auc(member_scores: Sequence[float] | np.ndarray,
        nonmember_scores: Sequence[float] | np.ndarray) -> float:
    """ROC AUC = P(member score > non-member score) + P(tie) / 2."""
    members, nonmembers = _as_scores(member_scores, nonmember_scores)
    return float(_weighted_auc(members, nonmembers, np.ones((1, len(members))),
                               np.ones((1, len(nonmembers))))[0])


def _weighted_auc(members: np.ndarray, nonmembers: np.ndarray, w_m: np.ndarray,
                  w_n: np.ndarray) -> np.ndarray:
    """AUC per row of weights ``w_m`` (B, n_m), ``w_n`` (B, n_n) (multiplicities)."""
    order = np.argsort(nonmembers, kind="stable")
    sorted_n = nonmembers[order]
    cum = np.concatenate([np.zeros((len(w_n), 1)), np.cumsum(w_n[:, order], axis=1)], axis=1)
    left = np.searchsorted(sorted_n, members, side="left")
    right = np.searchsorted(sorted_n, members, side="right")
    less, equal = cum[:, left], cum[:, right] - cum[:, left]
    wins = (w_m * (less + 0.5 * equal)).sum(axis=1)
    return wins / (w_m.sum(axis=1) * w_n.sum(axis=1))


def _resample_counts(rng: np.random.Generator, n: int, rows: int) -> np.ndarray:
    """(rows, n) multiplicities of a with-replacement resample of n items per row."""
    idx = rng.integers(0, n, size=(rows, n)) + (np.arange(rows) * n)[:, None]
    return np.bincount(idx.ravel(), minlength=rows * n).reshape(rows, n).astype(np.float64)


def auc_bootstrap_ci(member_scores: Sequence[float] | np.ndarray,
                     nonmember_scores: Sequence[float] | np.ndarray, n_boot: int = N_BOOT,
                     seed: int = 0, level: float = CI_LEVEL) -> tuple[float, float]:
    """Stratified percentile-bootstrap interval of the AUC: members and non-members are
    resampled separately (their counts stay fixed), ``n_boot`` seeded resamples."""
    members, nonmembers = _as_scores(member_scores, nonmember_scores)
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    values = []
    for start in range(0, n_boot, 200):  # bounded memory: 200 resamples at a time
        rows = min(200, n_boot - start)
        values.append(_weighted_auc(members, nonmembers,
                                    _resample_counts(rng, len(members), rows),
                                    _resample_counts(rng, len(nonmembers), rows)))
    boot = np.concatenate(values)
    alpha = 1.0 - level
    return float(np.quantile(boot, alpha / 2)), float(np.quantile(boot, 1 - alpha / 2))


def tpr_count_at_fpr(member_scores: Sequence[float] | np.ndarray,
                     nonmember_scores: Sequence[float] | np.ndarray,
                     target_fpr: float) -> tuple[int, int]:
    """``(true positives, false positives)`` of the threshold that flags at most
    ``floor(target_fpr * n_nonmembers)`` non-members (strictly above it; the highest TPR such
    a deterministic threshold reaches)."""
    members, nonmembers = _as_scores(member_scores, nonmember_scores)
    if not 0 <= target_fpr <= 1:
        raise ValueError(f"target_fpr must be in [0, 1], got {target_fpr}")
    allowed = math.floor(target_fpr * len(nonmembers) + 1e-9)
    if allowed >= len(nonmembers):
        return len(members), len(nonmembers)
    threshold = np.sort(nonmembers)[::-1][allowed]  # the (allowed+1)-th highest non-member
    return int((members > threshold).sum()), int((nonmembers > threshold).sum())


@dataclass
class MiaSummary:
    """``metrics``: name -> value (None where the sample cannot resolve it); ``null_reasons``:
    name -> why it is None."""

    metrics: dict[str, float | None]
    null_reasons: dict[str, str] = field(default_factory=dict)


def mia_summary(member_scores: Sequence[float] | np.ndarray,
                nonmember_scores: Sequence[float] | np.ndarray, prefix: str = "mia_",
                n_boot: int = N_BOOT, seed: int = 0, level: float = CI_LEVEL,
                warn: bool = True) -> MiaSummary:
    """``{prefix}auc`` (+ ``_ci_low`` / ``_ci_high``: bootstrap), ``{prefix}balanced_acc``
    (best threshold), ``{prefix}tpr_at_0.1pct_fpr`` and ``{prefix}tpr_at_1pct_fpr`` (+ their
    Clopper-Pearson ``_ci_low`` / ``_ci_high``; None when ``n_nonmembers * fpr < 10``),
    ``{prefix}n_members``, ``{prefix}n_nonmembers``."""
    members, nonmembers = _as_scores(member_scores, nonmember_scores)
    fpr, tpr = roc_points(members, nonmembers)
    low, high = auc_bootstrap_ci(members, nonmembers, n_boot, seed, level)
    out: dict[str, float | None] = {
        f"{prefix}auc": auc(members, nonmembers), f"{prefix}auc_ci_low": low,
        f"{prefix}auc_ci_high": high,
        f"{prefix}balanced_acc": float(0.5 * (1.0 + np.max(tpr - fpr)))}
    reasons: dict[str, str] = {}
    n_m, n_n = len(members), len(nonmembers)
    for target, name in LOW_FPRS.items():
        key = f"{prefix}{name}"
        expected = n_n * target
        if expected < MIN_EXPECTED_FP:
            why = (f"unresolved: {n_n} non-members expect {expected:.3g} false positives at "
                   f"FPR {target:g} (need >= {MIN_EXPECTED_FP:g}, i.e. >= "
                   f"{math.ceil(MIN_EXPECTED_FP / target)} non-members)")
            out |= {key: None, f"{key}_ci_low": None, f"{key}_ci_high": None}
            reasons |= {key: why, f"{key}_ci_low": why, f"{key}_ci_high": why}
            if warn:
                logger.warning("%s: %s", key, why)
            continue
        tp, _ = tpr_count_at_fpr(members, nonmembers, target)
        lo, hi = clopper_pearson(tp, n_m, level)
        out |= {key: tp / n_m, f"{key}_ci_low": lo, f"{key}_ci_high": hi}
    out |= {f"{prefix}n_members": float(n_m), f"{prefix}n_nonmembers": float(n_n)}
    return MiaSummary(out, reasons)


def mia_metrics(member_scores: Sequence[float] | np.ndarray,
                nonmember_scores: Sequence[float] | np.ndarray, prefix: str = "mia_",
                **kwargs: object) -> dict[str, float | None]:
    """The metrics of :func:`mia_summary` (without the reasons)."""
    return mia_summary(member_scores, nonmember_scores, prefix, **kwargs).metrics  # type: ignore[arg-type]


def resolution_note(n_nonmembers: int, n_members: int) -> str:
    """One line on what a sample of this size can resolve (for reports)."""
    lowest = [f"{100 * t:g} %" for t in sorted(LOW_FPRS) if n_nonmembers * t >= MIN_EXPECTED_FP]
    need = math.ceil(MIN_EXPECTED_FP / min(LOW_FPRS))
    se = 0.5 * math.sqrt(1.0 / (3 * n_members) + 1.0 / (3 * n_nonmembers))
    return (f"{n_members} members / {n_nonmembers} non-members: AUC near 0.5 resolved to about "
            f"+-{1.96 * se:.3f} (95 %); TPR reported at FPR "
            f"{', '.join(lowest) if lowest else 'none of 0.1 %, 1 %'}"
            + ("" if len(lowest) == len(LOW_FPRS)
               else f" (0.1 % needs >= {need} non-members)"))


def plot_mia_roc(curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
                 title: str = "Membership inference ROC") -> Figure:
    """Log-log ROC figure, one line per attack: ``{name: (member_scores, nonmember_scores)}``.

    The legend carries AUC; the chance diagonal is dashed. Returns the Figure (not saved).
    """
    if not curves:
        raise ValueError("no ROC curves to plot")
    fig = Figure(figsize=(5, 5))
    ax = fig.add_subplot(1, 1, 1)
    smallest = 1.0
    for name, (members, nonmembers) in curves.items():
        fpr, tpr = roc_points(members, nonmembers)
        smallest = min(smallest, 1.0 / len(np.ravel(nonmembers)), 1.0 / len(np.ravel(members)))
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc(members, nonmembers):.3f})")
    lo = min(1e-3, 0.5 * smallest)
    ax.plot([lo, 1], [lo, 1], "k--", lw=0.8, label="chance")
    ax.set(xscale="log", yscale="log", xlim=(lo, 1), ylim=(lo, 1), xlabel="false positive rate",
           ylabel="true positive rate", title=title)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    return fig
