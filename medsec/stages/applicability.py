"""Configured entries that do not apply to the data: skipped with an explicit record.

One mechanism for the attack stage (``attack.attacks[i]``) and the defense stage
(``defense.defenses[i].name``): on multi-label data an entry that needs one class per image is
dropped from the run, and each drop is recorded as a :class:`NotApplicable` (a warning line,
the MLflow tag :data:`SKIPPED_TAG` and a ``"not applicable"`` row in the stage's JSON/markdown
report). Only when no entry remains is it an error: one ConfigError naming the field.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from medsec.errors import ConfigError

T = TypeVar("T")

SKIPPED_TAG = "medsec.skipped"
"""MLflow tag on a stage run: ``; ``-joined :meth:`NotApplicable.line` of each skipped entry
(``none`` when nothing was skipped)."""

NOT_APPLICABLE = "not applicable"
"""The status of a skipped entry in a stage's report rows."""

log = logging.getLogger("medsec")


@dataclass(frozen=True)
class NotApplicable:
    """One configured entry left out because it does not apply to the data.

    ``field``: the config path (``attack.attacks[3]``); ``entry``: its label (``deepfool``);
    ``reason``: why, in a few words (``deepfool needs one class per image``)."""

    field: str
    entry: str
    reason: str
    data: str = "multi-label data"

    def line(self) -> str:
        """``attack.attacks[3] deepfool: not applicable to multi-label data (<reason>)``."""
        return f"{self.field} {self.entry}: {NOT_APPLICABLE} to {self.data} ({self.reason})"

    def row(self) -> dict[str, str]:
        """The report row: field, entry, ``status="not applicable"`` and the reason (never a
        number)."""
        return {"field": self.field, "entry": self.entry, "status": NOT_APPLICABLE,
                "reason": f"{NOT_APPLICABLE} to {self.data}: {self.reason}"}


def partition(entries: Sequence[T], reason_of: Callable[[T], str | None],
              field_of: Callable[[int, T], str], label_of: Callable[[T], str],
              data: str = "multi-label data") -> tuple[list[T], list[NotApplicable]]:
    """Split ``entries`` into those that apply (``reason_of(entry) is None``, order kept) and
    a :class:`NotApplicable` record for each other one (its original index in the field name).
    Each skipped entry is logged as one warning line. ConfigError when entries were configured
    but none applies (naming every field and why)."""
    kept: list[T] = []
    skipped: list[NotApplicable] = []
    for i, entry in enumerate(entries):
        reason = reason_of(entry)
        if reason is None:
            kept.append(entry)
        else:
            skipped.append(NotApplicable(field_of(i, entry), label_of(entry), reason, data))
    if skipped and not kept:
        raise ConfigError(f"{'; '.join(s.line() for s in skipped)} - no configured entry "
                          "applies: add one that does (see README, Your own data)")
    for s in skipped:
        log.warning("%s; skipped", s.line())
    return kept, skipped


def tag_value(skipped: Sequence[NotApplicable]) -> str:
    """The :data:`SKIPPED_TAG` value: every skipped entry's line, ``; ``-joined (MLflow tags
    hold 5000 characters: cut at 4000), or ``none``."""
    return "; ".join(s.line() for s in skipped)[:4000] or "none"


def markdown_section(skipped: Sequence[NotApplicable], what: str) -> str:
    """Markdown table of the skipped entries (``what``: e.g. ``Defenses``), '' when none."""
    if not skipped:
        return ""
    rows = "".join(f"| {s.entry} | {s.field} | {s.row()['reason']} |\n" for s in skipped)
    return (f"\n## {what} not applicable to this data (skipped, not scored)\n\n"
            "| entry | config | status |\n|---|---|---|\n" + rows)
