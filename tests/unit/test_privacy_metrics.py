"""Membership-inference metrics on hand-made ROCs."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from matplotlib.figure import Figure

from medsec.metrics.privacy import mia_metrics, plot_mia_roc, roc_points, tpr_at_fpr

# Members 0.9, 0.8, 0.7, 0.3; non-members 0.85, 0.6, 0.2, 0.1, 0.05. Sweeping the threshold
# down gives the corners (FPR, TPR): (0,0) (0,.25) (.2,.25) (.2,.5) (.2,.75) (.4,.75) (.4,1)
# ... (1,1). Pairs (member > non-member): 3 + 4 + 4 + 5 = 16 of 20 -> AUC 0.8.
MEMBERS = [0.9, 0.8, 0.7, 0.3]
NONMEMBERS = [0.85, 0.6, 0.2, 0.1, 0.05]


def test_roc_corners_auc_and_balanced_accuracy():
    fpr, tpr = roc_points(MEMBERS, NONMEMBERS)
    corners = set(zip(fpr.round(6), tpr.round(6), strict=True))
    assert {(0.0, 0.25), (0.2, 0.75), (0.4, 1.0), (1.0, 1.0)} <= corners
    m = mia_metrics(MEMBERS, NONMEMBERS)
    assert m["mia_auc"] == pytest.approx(0.8)
    # Best threshold between 0.3 and 0.2: TPR 1, FPR 0.4 -> (1 + 0.6) / 2 (vs 0.775 at 0.65).
    assert m["mia_balanced_acc"] == pytest.approx(0.8)
    assert (m["mia_n_members"], m["mia_n_nonmembers"]) == (4, 5)
    assert m["mia_auc_ci_low"] <= m["mia_auc"] <= m["mia_auc_ci_high"]


def test_tpr_at_fpr_interpolates_between_adjacent_corners():
    fpr, tpr = roc_points(MEMBERS, NONMEMBERS)
    assert tpr_at_fpr(fpr, tpr, 0.0) == pytest.approx(0.25)  # top of the vertical step
    assert tpr_at_fpr(fpr, tpr, 0.1) == pytest.approx(0.25)  # flat segment
    assert tpr_at_fpr(fpr, tpr, 0.2) == pytest.approx(0.75)
    assert tpr_at_fpr(fpr, tpr, 1.0) == pytest.approx(1.0)
    # A member/non-member tie makes a diagonal segment (0,.5) -> (.5,1): interpolate on it.
    fpr, tpr = roc_points([0.9, 0.5], [0.5, 0.1])
    assert tpr_at_fpr(fpr, tpr, 0.1) == pytest.approx(0.6)
    assert tpr_at_fpr(fpr, tpr, 0.01) == pytest.approx(0.51)
    with pytest.raises(ValueError, match="target_fpr"):
        tpr_at_fpr(fpr, tpr, 1.5)


def test_low_fpr_metrics_with_enough_nonmembers():
    # 2000 non-members at 0..1999, members: 5 above all non-members, then 10 at rank 1990.5
    # (between the 10th and 11th highest non-member), then the rest low.
    nonmembers = np.arange(2000, dtype=float)
    members = np.r_[np.full(5, 5000.0), np.full(10, 1989.5), np.zeros(85)]
    m = mia_metrics(members, nonmembers)
    # FPR 0.1 % = 2 false positives expected: too few to resolve -> None (not a number).
    assert m["mia_tpr_at_0.1pct_fpr"] is None
    # FPR 1 % = 20 false positives: the 10 members at 1989.5 are above 10 FPs -> TPR 0.15.
    assert m["mia_tpr_at_1pct_fpr"] == pytest.approx(0.15)
    # 20000 non-members resolve 0.1 % (20 expected false positives)
    many = np.arange(20000, dtype=float) / 10
    m = mia_metrics(np.r_[np.full(5, 5000.0), np.zeros(95)], many)
    assert m["mia_tpr_at_0.1pct_fpr"] == pytest.approx(0.05)


def test_few_nonmembers_are_flagged(caplog):
    with caplog.at_level(logging.WARNING, logger="medsec.metrics.privacy"):
        mia_metrics(MEMBERS, NONMEMBERS)
    assert "unresolved" in caplog.text


def test_chance_and_perfect_attacks():
    rng = np.random.default_rng(0)
    same = mia_metrics(rng.normal(size=2000), rng.normal(size=2000), prefix="x_")
    assert abs(same["x_auc"] - 0.5) < 0.03
    assert same["x_tpr_at_1pct_fpr"] < 0.03
    perfect = mia_metrics([2.0, 3.0], np.linspace(0, 1, 1000))
    assert perfect["mia_auc"] == 1.0 and perfect["mia_tpr_at_1pct_fpr"] == 1.0


def test_bad_inputs():
    with pytest.raises(ValueError, match="at least one"):
        mia_metrics([], [0.1])
    with pytest.raises(ValueError, match="NaN"):
        mia_metrics([np.nan], [0.1])


def test_log_log_roc_figure():
    rng = np.random.default_rng(0)
    fig = plot_mia_roc(
        {
            "loss": (rng.normal(1, 1, 200), rng.normal(0, 1, 200)),
            "lira": (rng.normal(2, 1, 200), rng.normal(0, 1, 200)),
        }
    )
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert len(ax.get_lines()) == 3  # two attacks + chance
    assert "AUC" in ax.get_legend().get_texts()[0].get_text()
    with pytest.raises(ValueError):
        plot_mia_roc({})
