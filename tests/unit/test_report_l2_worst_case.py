"""The leaderboard's "Rob L2 0.5" column is a per-example worst case over the suite's L2
attacks (like the L-inf columns), not the best single L2 attack; L-inf names are unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from medsec.attacks.config import AttackSpec
from medsec.attacks.results import AttackPoint, SuiteResult
from medsec.attacks.scoring import worst_case
from medsec.report.leaderboard import build
from medsec.report.records import RunRecord

LABELS = np.array([0, 1, 0, 1, 0, 1, 0, 1])
CLEAN = LABELS.copy()  # every example correct on the clean input


def _fooled(*indices: int) -> np.ndarray:
    pred = CLEAN.copy()
    pred[list(indices)] = 1 - pred[list(indices)]
    return pred


def _point(label: str, name: str, norm: str, eps: float, adv_pred: np.ndarray) -> AttackPoint:
    spec = AttackSpec(name=name, eps=(eps,), params={"norm": norm}, label=label)
    acc = float((adv_pred == LABELS).mean())
    return AttackPoint(spec, eps, norm, {"norm": norm}, {"robust_acc": acc},
                       np.zeros((len(LABELS), 1, 2, 2), np.float32), adv_pred)


@pytest.fixture
def suite() -> SuiteResult:
    points = [
        _point("pgd_l2", "pgd", "l2", 0.5, _fooled(0)),      # fools example 0 only
        _point("apgd_l2", "apgd", "l2", 0.5, _fooled(1)),    # fools example 1 only
        _point("pgd", "pgd", "linf", 128 / 255, _fooled(2, 3, 4)),  # same key eps128, L-inf
        _point("pgd", "pgd", "linf", 8 / 255, _fooled(5)),
    ]
    result = SuiteResult(np.zeros((8, 1, 2, 2), np.float32), LABELS, np.arange(8), CLEAN, 2,
                         points)
    result.worst_case = worst_case(points, LABELS, CLEAN)
    return result


def test_l2_worst_case_is_per_example_and_kept_apart_from_linf(suite) -> None:
    flat = suite.metrics()
    # each L2 attack alone: 7/8; per example across both: 6/8 (lower than either)
    assert flat["pgd_l2_eps128_robust_acc"] == flat["apgd_l2_eps128_robust_acc"] == 7 / 8
    assert flat["worst_case_l2_eps128_robust_acc"] == 6 / 8
    assert flat["worst_case_l2_eps128_attack_success_rate"] == 2 / 8
    # L-inf names unchanged, and the L-inf 128/255 attack is not mixed into the L2 group
    assert flat["worst_case_eps128_robust_acc"] == 5 / 8
    assert flat["worst_case_eps8_robust_acc"] == 7 / 8
    rows = {(r["norm"], r["attacks"][0]): r for r in suite.worst_case}
    assert rows["l2", "pgd_l2"]["attacks"] == ["pgd_l2", "apgd_l2"]
    curve = [r for r in suite.curve_rows() if r["attack"] == "worst_case"]
    assert {(r["norm"], r["robust_acc"]) for r in curve if r["eps"] == 0.5} == {("l2", 6 / 8)}


def test_leaderboard_l2_cell_is_the_worst_case_of_the_attack_run(suite) -> None:
    tags = {"medsec.stage": "attack", "medsec.attack": "suite", "medsec.dataset": "phantoms",
            "medsec.model": "small_cnn", "medsec.data_version": "v1"}
    attack = RunRecord("a" * 32, tags, suite.metrics(), {}, 1, 2)
    (board,) = build([attack])
    (row,) = board.rows
    cell = row.cells["robust_l2_0.5"]
    assert cell.value == pytest.approx(6 / 8)  # not min(7/8, 7/8) of the single attacks
    assert cell.run_id == attack.run_id and cell.source == "attack:worst_case_l2_eps128_robust_acc"


def test_leaderboard_l2_cell_without_the_worst_case_is_empty_with_a_reason() -> None:
    tags = {"medsec.stage": "attack", "medsec.attack": "suite", "medsec.dataset": "phantoms",
            "medsec.model": "small_cnn", "medsec.data_version": "v1"}
    old = RunRecord("b" * 32, tags, {"pgd_l2_eps128_robust_acc": 0.4}, {}, 1, 2)
    (board,) = build([old])
    cell = board.rows[0].cells["robust_l2_0.5"]
    assert cell.empty and "worst_case_l2_eps128_robust_acc" in cell.reason
    assert cell.run_id == old.run_id
