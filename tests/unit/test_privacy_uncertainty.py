"""Membership-inference uncertainty against oracles: scipy's exact binomial interval, bootstrap
coverage of a known AUC, sklearn's AUC, and the resolution rule (null + reason)."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from scipy.stats import binomtest, norm
from sklearn.metrics import roc_auc_score

from medsec.io import json_safe
from medsec.metrics.privacy import (
    auc,
    auc_bootstrap_ci,
    clopper_pearson,
    mia_summary,
    resolution_note,
    tpr_count_at_fpr,
)


@pytest.mark.parametrize("k,n", [(0, 10), (1, 10), (5, 10), (10, 10), (3, 2000), (37, 2600),
                                 (1999, 2000)])
def test_clopper_pearson_matches_scipy_exact(k, n):
    ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    low, high = clopper_pearson(k, n)
    assert low == pytest.approx(ref.low, abs=1e-9) and high == pytest.approx(ref.high, abs=1e-9)
    with pytest.raises(ValueError):
        clopper_pearson(n + 1, n)


def test_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(1)
    members, nonmembers = rng.integers(0, 5, 300).astype(float), rng.integers(0, 4, 200) * 1.0
    truth = np.r_[np.ones(300), np.zeros(200)]
    assert auc(members, nonmembers) == pytest.approx(
        roc_auc_score(truth, np.r_[members, nonmembers]))


def test_bootstrap_interval_covers_a_known_auc():
    # members ~ N(d, 1), non-members ~ N(0, 1): AUC = Phi(d / sqrt 2) exactly.
    d, n, reps = 0.5, 150, 200
    true_auc = norm.cdf(d / math.sqrt(2))
    rng = np.random.default_rng(0)
    hits = widths = 0.0
    for rep in range(reps):
        low, high = auc_bootstrap_ci(rng.normal(d, 1, n), rng.normal(0, 1, n), seed=rep)
        hits += low <= true_auc <= high
        widths += high - low
    coverage = hits / reps
    assert 0.89 <= coverage <= 0.99, coverage  # nominal 0.95 (binomial sd over 200 reps 0.015)
    # the interval width matches the normal theory's (~ 2 * 1.96 * sd of the AUC, ~0.125)
    assert 0.09 < widths / reps < 0.16


def test_bootstrap_is_seeded_stratified_and_shrinks_with_data():
    rng = np.random.default_rng(3)
    m, nm = rng.normal(0.3, 1, 400), rng.normal(0, 1, 400)
    assert auc_bootstrap_ci(m, nm, seed=5) == auc_bootstrap_ci(m, nm, seed=5)
    small = np.subtract(*auc_bootstrap_ci(m[:100], nm[:100])[::-1])
    large = np.subtract(*auc_bootstrap_ci(m, nm)[::-1])
    assert large < small
    low, high = auc_bootstrap_ci([1.0, 2.0], [0.0, 0.5])  # perfect separation in every resample
    assert low == high == 1.0


def test_tpr_at_fpr_counts_and_intervals():
    # 2000 non-members 0..1999; 5 members above all, 10 at 1989.5, 85 low: at 1 % FPR (20
    # false positives allowed) the threshold is the 21st highest non-member (1979): 15 members.
    nonmembers = np.arange(2000, dtype=float)
    members = np.r_[np.full(5, 5000.0), np.full(10, 1989.5), np.zeros(85)]
    assert tpr_count_at_fpr(members, nonmembers, 0.01) == (15, 20)
    assert tpr_count_at_fpr(members, nonmembers, 0.005) == (15, 10)
    s = mia_summary(members, nonmembers, n_boot=1000)
    ref = binomtest(15, 100).proportion_ci(method="exact")
    assert s.metrics["mia_tpr_at_1pct_fpr"] == pytest.approx(0.15)
    assert s.metrics["mia_tpr_at_1pct_fpr_ci_low"] == pytest.approx(ref.low)
    assert s.metrics["mia_tpr_at_1pct_fpr_ci_high"] == pytest.approx(ref.high)
    assert (s.metrics["mia_n_members"], s.metrics["mia_n_nonmembers"]) == (100, 2000)


def test_unresolvable_fpr_is_null_with_reason_and_warning(caplog):
    rng = np.random.default_rng(0)
    with caplog.at_level(logging.WARNING, logger="medsec.metrics.privacy"):
        s = mia_summary(rng.normal(1, 1, 3000), rng.normal(0, 1, 2600), prefix="mia_")
    # 2600 non-members: 2.6 expected false positives at 0.1 % (unresolved), 26 at 1 % (ok)
    assert s.metrics["mia_tpr_at_0.1pct_fpr"] is None
    assert s.metrics["mia_tpr_at_0.1pct_fpr_ci_low"] is None
    assert "2600 non-members" in s.null_reasons["mia_tpr_at_0.1pct_fpr"]
    assert "10000" in s.null_reasons["mia_tpr_at_0.1pct_fpr"]
    assert s.metrics["mia_tpr_at_1pct_fpr"] is not None and s.metrics["mia_tpr_at_1pct_fpr"] > 0.05
    assert "mia_tpr_at_0.1pct_fpr" in caplog.text and "mia_tpr_at_1pct_fpr" not in caplog.text
    clean, reasons = json_safe(s.metrics)
    assert clean["mia_tpr_at_0.1pct_fpr"] is None and not reasons  # None, not NaN
    assert "0.1 % needs >= 10000" in resolution_note(2600, 2600)
    assert "1 %" in resolution_note(2600, 2600)
