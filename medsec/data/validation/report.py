"""The validation report, read from Great Expectations' result objects.

Pass/fail, failure messages, warnings and the duplicate groups all come from the GX results
(``success``, severity, and each result dict's ``unexpected_index_list`` /
``partial_missing_list`` / ``observed_value``); the class counts, split sizes and mask
statistics are the fingerprint facts. Nothing GX decided is recomputed here.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medsec.data.validation.checks import (
    ACROSS,
    CLASS_BALANCE,
    CROSSING,
    EMPTY_SPLIT,
    PER_SPLIT,
    WITHIN,
)
from medsec.data.validation.fingerprints import label_key, shape_str
from medsec.errors import ValidationFailed
from medsec.io import json_safe, write_json, write_text

HARD = "hard"
SOFT = "soft"
MAX_LISTED_GROUPS = 50  # duplicate groups listed in the markdown report (the rest are counted)


def _value_text(value: Any) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _fraction_text(value: Any) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{float(value):.1%}"


def _conflicting(group: dict[str, Any]) -> bool:
    return len({str(label) for label in group.get("labels", [])}) > 1


@dataclass
class ValidationReport:
    """What :func:`validate_dataset` found. ``success`` is False iff a HARD expectation failed."""

    success: bool
    hard_failures: list[str]
    warnings: list[str]
    duplicates_within: list[dict[str, Any]]  # {split, indices, labels, content_hash}
    duplicates_across: list[dict[str, Any]]  # {content_hash, splits, members, labels}
    class_counts: dict[str, dict[int, int]]  # split -> label -> count (all classes listed)
    n_images: dict[str, int]
    expectations: list[dict[str, Any]]  # {name, type, severity, success, observed, engine}
    num_classes: int
    expected_shape: list[int]
    min_class_fraction: float
    dataset_name: str | None = None
    dataset_version: str | None = None
    verification: str | None = None
    class_names: list[str] = field(default_factory=list)
    gx_version: str = ""
    # split -> {n_masks, mean_foreground_fraction, fraction_with_foreground, min, max}; None
    # when no split has masks
    mask_stats: dict[str, dict[str, Any]] | None = None
    # own data: {"patients_across": k, "studies_across": k, "near_duplicate_groups_across": k,
    # ...} (0 when checked and clean); empty when not checked
    leakage: dict[str, int] = field(default_factory=dict)

    def class_fractions(self) -> dict[str, dict[int, float]]:
        """split -> label -> fraction of the split in [0, 1] (0 for an empty split)."""
        return {
            split: {c: (k / total if total else 0.0) for c, k in counts.items()}
            for split, counts in self.class_counts.items()
            for total in [sum(counts.values())]
        }

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (label keys become strings, NaN becomes null)."""
        data = {**asdict(self), "class_fractions": self.class_fractions(),
                "verdict": "PASSED" if self.success else "FAILED"}
        return json.loads(json.dumps(json_safe(data)[0], default=str))  # keys become str

    def summary_metrics(self) -> dict[str, float]:
        """Flat numeric metrics (for MLflow / DVC): sizes, duplicate counts, class fractions."""
        within, across = self.duplicates_within, self.duplicates_across
        n_within = sum(len(g["indices"]) for g in within)
        metrics: dict[str, float] = {
            "success": 1.0 if self.success else 0.0,
            **{f"n_{split}": n for split, n in self.n_images.items()},
            "n_images": sum(self.n_images.values()), "n_duplicate_groups_within": len(within),
            "n_duplicate_images_within": n_within,
            "n_redundant_images_within": n_within - len(within),
            **{f"n_duplicate_groups_within_{split}": sum(g["split"] == split for g in within)
               for split in self.n_images},
            "n_duplicate_groups_across": len(across),
            "n_duplicate_images_across": sum(len(g["members"]) for g in across),
            "n_hard_failures": len(self.hard_failures), "n_warnings": len(self.warnings),
            **{f"class_fraction_{split}_{c}": round(float(frac), 6)
               for split, fractions in self.class_fractions().items()
               for c, frac in fractions.items()},
            **{f"n_{key}": float(value) for key, value in self.leakage.items()}}
        return metrics | {
            f"{name}_{split}": round(float(stats[key]), 6)
            for split, stats in (self.mask_stats or {}).items()
            for key, name in (("mean_foreground_fraction", "mask_foreground_fraction"),
                              ("fraction_with_foreground", "mask_images_with_foreground"))
            if stats.get(key) is not None and np.isfinite(stats[key])}

    def to_markdown(self, max_groups: int = MAX_LISTED_GROUPS) -> str:
        """A readable summary: verdict, hard failures, warnings, class counts, duplicates."""
        sizes = ", ".join(f"{s} {n}" for s, n in self.n_images.items())
        lines = [f"# Data validation: {self.dataset_name or 'dataset'}", "",
                 f"**Verdict: {'PASSED' if self.success else 'FAILED'}** "
                 f"({len(self.hard_failures)} hard failure(s), {len(self.warnings)} warning(s))",
                 "", f"- images: {sizes} (total {sum(self.n_images.values())})",
                 f"- expected image shape: {shape_str(self.expected_shape)}, "
                 f"{self.num_classes} class(es)"]
        lines += [text for value, text in (
            (self.dataset_version, f"- data version (md5): `{self.dataset_version}`"),
            (self.verification, f"- verification: {self.verification}"),
            (self.gx_version, f"- checked with Great Expectations {self.gx_version}")) if value]
        for title, messages in (("Hard failures", self.hard_failures),
                                ("Warnings", self.warnings)):
            lines += ["", f"## {title}", "", *([f"- {m}" for m in messages] or ["None."])]
        lines += self._md_class_counts() + _md_masks(self.mask_stats)
        for title, groups in (
                ("Duplicate images within splits", [
                    (", ".join(f"{g['split']}[{i}]" for i in g["indices"]), g)
                    for g in self.duplicates_within]),
                ("Images shared between splits", [
                    (", ".join(g["members"]), g) for g in self.duplicates_across])):
            lines += ["", f"## {title} ({len(groups)} group(s))", ""] + (
                [] if groups else ["None."])
            for members, group in groups[:max_groups]:
                labels = group.get("labels", [])
                note = (f" - CONFLICTING labels {', '.join(map(str, labels))}"
                        if _conflicting(group) else f" - label {labels[0]}" if labels else "")
                lines.append(f"- {members}{note} (sha1 `{group['content_hash'][:12]}`)")
            if len(groups) > max_groups:
                lines.append(f"- ... and {len(groups) - max_groups} more group(s)")
        lines += ["", "## Expectations", "", "| expectation | severity | result | observed |",
                  "|---|---|---|---|"]
        for exp in self.expectations:
            result = "pass" if exp["success"] else ("FAIL" if exp["severity"] == HARD else "warn")
            observed = exp.get("observed") or {}
            text = (f"{observed['unexpected_count']} of {observed.get('element_count', '?')} "
                    "unexpected" if "unexpected_count" in observed else
                    "; ".join(f"{k}: {v}" for k, v in observed.items()).replace("|", "/"))
            lines.append(f"| {exp['name']} | {exp['severity']} | {result} | {text} |")
        return "\n".join(lines) + "\n"

    def _md_class_counts(self) -> list[str]:
        names = self.class_names

        def label(c: Any) -> str:
            return f"{c} ({names[c]})" if isinstance(c, int) and 0 <= c < len(names) else str(c)

        seen = {c for counts in self.class_counts.values() for c in counts}
        classes = sorted(c for c in seen if isinstance(c, int))
        classes += sorted((c for c in seen if not isinstance(c, int)), key=str)
        header = ["split", "images", *[label(c) for c in classes]]
        lines = ["", "## Class counts", "", "| " + " | ".join(header) + " |",
                 "|" + "---|" * len(header)]
        fractions = self.class_fractions()
        for split, counts in self.class_counts.items():
            cells = [split, str(self.n_images.get(split, 0))]
            cells += [f"{counts.get(c, 0)} ({fractions[split].get(c, 0.0):.1%})" for c in classes]
            lines.append("| " + " | ".join(cells) + " |")
        return lines


def _md_masks(mask_stats: dict[str, dict[str, Any]] | None) -> list[str]:
    if mask_stats is None:
        return []
    lines = ["", "## Masks", "", "| split | masks | mean foreground fraction | images with "
             "foreground | value range |", "|---|---|---|---|---|"]
    for split, stats in mask_stats.items():
        lo, hi = stats.get("min"), stats.get("max")
        value_range = ("-" if lo is None or hi is None or not np.isfinite([lo, hi]).all()
                       else f"{_value_text(lo)} to {_value_text(hi)}")
        lines.append(f"| {split} | {stats.get('n_masks', 0)} | "
                     f"{_fraction_text(stats.get('mean_foreground_fraction'))} | "
                     f"{_fraction_text(stats.get('fraction_with_foreground'))} | "
                     f"{value_range} |")
    return lines


def write_report(report: ValidationReport, out_dir: str | Path) -> dict[str, Path]:
    """Write ``report.json`` and ``report.md`` into ``out_dir`` (atomically); return the paths."""
    out = Path(out_dir)
    return {"json": write_json(out / "report.json", report.to_dict()),
            "markdown": write_text(out / "report.md", report.to_markdown())}


def raise_if_failed(report: ValidationReport, names: dict[str, list[str]] | None = None
                    ) -> None:
    """Raise :class:`ValidationFailed` listing the hard failures unless ``report.success``.

    ``names`` (split -> one file name per image) names the failing images of folder data,
    ``train[3]`` -> ``train[3] (case007)``, in the exception only, never in the report (which is
    logged: file names can carry patient identifiers).
    """
    if report.success:
        return

    def named(match: re.Match[str]) -> str:
        files = (names or {}).get(match.group(1), [])
        index = int(match.group(2))
        return f"{match.group(0)} ({files[index]})" if index < len(files) else match.group(0)

    failures = [re.sub(r"\b(train|val|test)\[(\d+)\]", named, f)
                for f in report.hard_failures] or ["(no failure message recorded)"]
    raise ValidationFailed(
        f"data validation of {report.dataset_name or 'dataset'} failed: {len(failures)} hard "
        "failure(s):\n  - " + "\n  - ".join(failures))


def _grouped(result: dict[str, Any], *key: str) -> list[list[dict[str, Any]]]:
    """GX's unexpected rows (with their index columns) grouped by the ``key`` columns, in
    order of first appearance (table order)."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    rows = result.get("unexpected_index_list") or result.get("partial_unexpected_index_list")
    for row in rows or []:
        groups.setdefault(tuple(str(row[k]) for k in key), []).append(row)
    return list(groups.values())


def _per_split_messages(meta: dict[str, Any], column: str, result: dict[str, Any]
                        ) -> list[str]:
    """One message per split (table order): the count and the first bad row (``medsec_detail``
    formatted with its ``column`` value as ``{}`` and its other index columns by name)."""
    messages = []
    for rows in _grouped(result, "split"):
        first = rows[0]
        fields = {str(k): _value_text(v) for k, v in first.items()}
        text = meta["medsec_detail"].format(_value_text(first.get(column)), **fields)
        messages.append(f"{meta['medsec_message']}: {len(rows)} image(s) in {first['split']} "
                        f"(first: {first['split']}[{int(first['index'])}]{text})")
    return messages or [f"{meta['medsec_message']}: {result.get('unexpected_count', '?')} image(s)"]


def _duplicates(kind: str, result: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """The messages and groups of a duplicate check: ``WITHIN`` groups {split, indices, labels,
    content_hash} per set of identical images of one split (one message per split), ``ACROSS``
    groups {content_hash, splits, members, labels} per set in several splits (one message)."""
    if kind == WITHIN:
        groups = [{"split": str(rows[0]["split"]), "indices": [int(r["index"]) for r in rows],
                   "labels": [label_key(r["label"]) for r in rows],
                   "content_hash": str(rows[0]["content_hash"])}
                  for rows in _grouped(result, "split", "content_hash")]
        messages = []
        for split in dict.fromkeys(g["split"] for g in groups):  # table (= split) order
            mine = [g for g in groups if g["split"] == split]
            n_img = sum(len(g["indices"]) for g in mine)
            messages.append(
                f"duplicate images within {split}: {len(mine)} group(s) of identical images, "
                f"{n_img} image(s), {n_img - len(mine)} redundant, "
                f"{sum(_conflicting(g) for g in mine)} group(s) with conflicting labels (e.g. "
                + ", ".join(f"{split}[{i}]" for i in mine[0]["indices"][:4]) + ")")
        return messages, groups
    groups = [{"content_hash": str(rows[0]["content_hash"]),
               "splits": list(dict.fromkeys(str(r["split"]) for r in rows)),
               "members": [f"{r['split']}[{int(r['index'])}]" for r in rows],
               "labels": [label_key(r["label"]) for r in rows]}
              for rows in _grouped(result, "content_hash")]
    pairs = sorted({"/".join(g["splits"]) for g in groups})
    return [f"images shared between splits (possible leakage): {len(groups)} group(s), "
            f"{sum(len(g['members']) for g in groups)} image(s) across {', '.join(pairs)}, "
            f"{sum(_conflicting(g) for g in groups)} group(s) with conflicting labels "
            f"(e.g. {', '.join(groups[0]['members'])})"] if groups else [], groups


_CROSSING_NAMES = {"patient": ("patients", "patients"), "study": ("studies", "studies"),
                   "near-duplicate group": ("near_duplicate_groups", "near-duplicate groups")}


def _crossing(meta: dict[str, Any], result: dict[str, Any]) -> tuple[list[str], dict[str, int]]:
    """The message and counts of a crossing check: how many patients / studies /
    near-duplicate groups (``medsec_message``, grouped by the ``medsec_detail`` column) are in
    more than one split, and their images (``<what>_across``, ``<what>_images_across``)."""
    noun, key = meta["medsec_message"], meta["medsec_detail"]
    metric, words = _CROSSING_NAMES.get(noun, (noun.replace(" ", "_") + "s", noun + "s"))
    groups = _grouped(result, key)
    n_images = sum(len(g) for g in groups)
    counts = {f"{metric}_across": len(groups), f"{metric}_images_across": n_images}
    if not groups:
        return [], counts
    combos = sorted({"/".join(dict.fromkeys(str(r["split"]) for r in g)) for g in groups})
    example = ", ".join(f"{r['split']}[{int(r['index'])}]" for r in groups[0][:4])
    return [f"{words} in more than one split (leakage): {len(groups)} {words}, {n_images} "
            f"image(s) across {', '.join(combos)} (e.g. {example})"], counts


def _balance_messages(result: dict[str, Any], minimum: float, names: list[str]) -> list[str]:
    messages = []
    for (row,) in _grouped(result, "split", "label"):  # one row per (split, label)
        c, total = label_key(row["label"]), int(row["n_images"])
        name = f" ({names[c]})" if isinstance(c, int) and 0 <= c < len(names) else ""
        state = "absent" if int(row["count"]) == 0 else f"{row['fraction']:.1%} of {total} image(s)"
        messages.append(f"class imbalance in {row['split']}: class {c}{name} is {state} "
                        f"(below min_class_fraction {minimum:.1%})")
    return messages


def _record(res: Any) -> dict[str, Any]:
    """The report's entry for one GX result: name, type, severity, success, observed."""
    config, result = res.expectation_config, dict(res.result or {})
    info = res.exception_info if isinstance(res.exception_info, dict) else {}
    severity = getattr(config.severity, "value", config.severity)
    observed = {k: result[k] for k in ("element_count", "unexpected_count", "unexpected_percent",
                                       "missing_count", "observed_value", "partial_missing_list",
                                       "partial_unexpected_counts") if result.get(k) is not None}
    if "partial_unexpected_counts" in observed:
        observed["partial_unexpected_counts"] = observed["partial_unexpected_counts"][:10]
    record = {"name": (config.meta or {}).get("medsec_name", config.type), "type": config.type,
              "severity": HARD if str(severity) == "critical" else SOFT,
              "success": bool(res.success), "engine": "great_expectations",
              "observed": json_safe(observed)[0]}
    if info.get("raised_exception"):
        record["exception"] = str(info.get("exception_message"))
    return record


def _messages(res: Any, record: dict[str, Any], class_names: list[str]
              ) -> tuple[list[str], list[dict[str, Any]]]:
    """The messages of one failed GX result, and its duplicate groups (if a duplicate check)."""
    config, result = res.expectation_config, dict(res.result or {})
    meta = config.meta or {}
    kind = meta.get("medsec_kind", PER_SPLIT)
    if "exception" in record:
        return [f"{record['name']}: could not be checked ({record['exception']})"], []
    if kind == EMPTY_SPLIT:
        missing = ", ".join(map(str, result.get("partial_missing_list") or []))
        return [f"empty split(s): {missing} (0 images)"], []
    if kind in (WITHIN, ACROSS):
        return _duplicates(kind, result)
    if kind == CROSSING:
        return _crossing(meta, result)[0], []
    if kind == CLASS_BALANCE:
        return _balance_messages(result, float(config.kwargs["min_value"]), class_names), []
    return _per_split_messages(meta, config.kwargs.get("column"), result), []


def from_results(results: list[Any], classes: pd.DataFrame, **fields: Any) -> ValidationReport:
    """The :class:`ValidationReport` of GX ``results``; ``classes`` is the class table (counts
    per split and label), ``fields`` the report's remaining fields (settings, metadata)."""
    out: dict[str, list[Any]] = {HARD: [], SOFT: [], WITHIN: [], ACROSS: []}
    expectations = [_record(res) for res in results]
    leakage: dict[str, int] = {}
    for res in results:
        meta = res.expectation_config.meta or {}
        if meta.get("medsec_kind") == CROSSING and "exception" not in _record(res):
            leakage |= _crossing(meta, dict(res.result or {}))[1]
    for res, record in zip(results, expectations, strict=True):
        if res.success or ("exception" in record and record["severity"] == SOFT):
            continue
        messages, groups = _messages(res, record, fields.get("class_names") or [])
        out[record["severity"]] += messages
        kind = (res.expectation_config.meta or {}).get("medsec_kind")
        if kind in (WITHIN, ACROSS):
            out[kind] = groups
    class_counts: dict[str, dict[Any, int]] = {}
    n_images: dict[str, int] = {}
    for split, label, count, total in zip(classes["split"], classes["label"], classes["count"],
                                          classes["n_images"], strict=True):
        class_counts.setdefault(str(split), {})[label_key(label)] = int(count)
        n_images[str(split)] = int(total)
    return ValidationReport(
        success=all(e["success"] for e in expectations if e["severity"] == HARD),
        hard_failures=out[HARD], warnings=out[SOFT], duplicates_within=out[WITHIN],
        duplicates_across=out[ACROSS], class_counts=class_counts, n_images=n_images,
        expectations=expectations, leakage=leakage, **fields)
