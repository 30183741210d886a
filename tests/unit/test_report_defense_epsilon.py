"""ε claimed of defense-stage recipes: adversarial training (PGD-AT, fast-AT) and input
transforms trained without DP are non-private, not an empty "no privacy/train/federated run"
cell; a defense trained under DP-SGD that logged no epsilon stays an explicit empty cell."""

from __future__ import annotations

from medsec.report.leaderboard import build
from medsec.report.records import RunRecord


def _defense(n: int, key: str, kind: str, dp: bool) -> RunRecord:
    tags = {"medsec.stage": "defense", "medsec.dataset": "pneumoniamnist",
            "medsec.model": "resnet18", "medsec.data_version": "v1",
            "medsec.defense": key, "medsec.defense.name": key, "medsec.defense.kind": kind}
    return RunRecord(f"{n:032x}", tags, {"clean_acc": 0.86, "robust_acc": 0.74},
                     {"privacy.dp.enabled": str(dp)}, start_time=1000 + n, end_time=2000 + n)


def test_defense_recipes_without_dp_are_non_private():
    records = [_defense(1, "pgd_at", "training", False),
               _defense(2, "fast_fgsm_at", "training", False),
               _defense(3, "jpeg", "transform", False)]
    (board,) = build(records)
    rows = {r.recipe: r for r in board.rows}
    assert set(rows) == {"PGD-AT", "fast-AT", "transform: jpeg"}
    for label, record in zip(("PGD-AT", "fast-AT", "transform: jpeg"), records, strict=True):
        cell = rows[label].cells["epsilon"]
        assert cell.text == "non-private (∞)", (label, cell)
        assert cell.run_id == record.run_id and cell.source.startswith("defense:")


def test_defense_trained_with_dp_but_no_epsilon_is_an_explicit_empty_cell():
    record = _defense(4, "pgd_at", "training", True)
    (board,) = build([record])
    cell = board.rows[0].cells["epsilon"]
    assert cell.empty and cell.text is None and cell.value is None
    assert "privacy.dp.enabled" in cell.reason and record.run_id[:8] in cell.reason
