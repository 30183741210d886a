"""The trust report on runs that skipped entries not applicable to their data (tag
``medsec.skipped``, e.g. smoothing and deepfool on multi-label data): a defense row of empty
cells with the reason, a note for the attack, and nothing when nothing was skipped."""

from __future__ import annotations

from medsec.report.leaderboard import COLUMN_KEYS, build, skipped_entries
from medsec.stages.applicability import NotApplicable, tag_value
from tests.unit.test_report_leaderboard import pipeline_records, rec

SMOOTHING = NotApplicable("defense.defenses[4].name", "smoothing",
                          "certifies the majority class of the noisy votes")
DEEPFOOL = NotApplicable("attack.attacks[2]", "deepfool", "deepfool needs one class per image")
UAP = NotApplicable("attack.attacks[8]", "uap", "uap needs one class per image")


def test_skipped_defense_is_a_row_of_empty_cells_and_skipped_attack_a_note():
    records = pipeline_records()
    records += [
        rec("defense", {"clean_acc": 0.8, "robust_acc": 0.1}, defense="undefended",
            skipped=tag_value([SMOOTHING])),
        rec("attack", {"worst_case_eps4_robust_acc": 0.2}, attack="suite",
            skipped=tag_value([DEEPFOOL, UAP])),
    ]
    assert skipped_entries(records[-1]) == [
        ("attack.attacks[2]", "deepfool", "not applicable to multi-label data (deepfool needs "
                                          "one class per image)"),
        ("attack.attacks[8]", "uap", "not applicable to multi-label data (uap needs one class "
                                     "per image)")]
    board = build(records)[0]
    rows = {row.recipe: row for row in board.rows}
    row = rows["not applicable: smoothing"]
    assert set(row.cells) == set(COLUMN_KEYS)
    for cell in row.cells.values():  # every cell empty, never a number, with the reason
        assert cell.empty and cell.value is None
        assert cell.reason.startswith("not applicable to multi-label data (certifies")
        assert "defense.defenses[4].name" in cell.reason
    assert rows["standard"].cells["test_acc"].value == 0.9  # the other rows unchanged
    notes = [n for n in board.notes if "skipped" in n]
    assert len(notes) == 2 and "attack.attacks[2] deepfool skipped, not applicable" in notes[0]


def test_nothing_skipped_adds_nothing():
    records = pipeline_records()
    plain = build(records)[0]
    tagged = build([*records, rec("defense", {"clean_acc": 0.8}, defense="undefended",
                                  skipped=tag_value([]))])[0]
    assert tag_value([]) == "none"
    assert not [r for r in tagged.rows if r.recipe.startswith("not applicable")]
    assert [n for n in tagged.notes if "skipped" in n] == []
    assert len(tagged.rows) == len(plain.rows)
