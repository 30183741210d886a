"""The privacy-utility table and figures: one row per audited model.

A row (:func:`summary_row`) is a flat dict: ``privacy`` (label), ``target_epsilon``,
``epsilon`` / ``delta`` / ``accountant`` / ``noise_multiplier`` (None when non-private),
``test_acc``, ``test_auc``, the DECLARED membership attack's ``mia_auc``,
``mia_tpr_at_1pct_fpr``, ``mia_tpr_at_0.1pct_fpr`` with their ``_ci_low`` / ``_ci_high``
(``mia_attack`` names it: declared in the config before running, never the best of several),
the same per attack (``mia_<attack>_*``), the sample sizes, extraction at the largest budget
and the inversion scores. A TPR the non-members cannot resolve is None (table: "n/r").
Figures are matplotlib ``Figure`` objects (not saved, not shown).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

MIA_COLUMNS = ("auc", "tpr_at_1pct_fpr", "tpr_at_0.1pct_fpr")
_CI = ("", "_ci_low", "_ci_high")
_EXTRA_PREFIXES = ("extraction_", "inversion_")


def _attack_names(keys: Any) -> list[str]:
    """Attack names (first-seen order) of ``mia_<attack>_auc`` keys."""
    names: list[str] = []
    for key in keys:
        if (key.startswith("mia_") and key.endswith("_auc") and key != "mia_auc"
                and not key.endswith("patient_auc")):
            name = key[len("mia_"):-len("_auc")]
            if name not in names:
                names.append(name)
    return names


def summary_row(label: str, target_epsilon: float | None, record: dict[str, Any],
                test_metrics: dict[str, float], audit_metrics: dict[str, float],
                declared: str | None) -> dict[str, Any]:
    """One table row (see the module docstring); ``record`` = the model's ``meta["privacy"]``."""
    private = record.get("mechanism") == "dp-sgd"
    row: dict[str, Any] = {"privacy": label, "target_epsilon": target_epsilon}
    for key in ("epsilon", "delta", "accountant", "noise_multiplier"):
        row[key] = record.get(key) if private else None
    row |= {k: test_metrics.get(k) for k in ("test_acc", "test_auc")}
    row["mia_attack"] = declared
    for suffix in MIA_COLUMNS:
        for ci in _CI:
            row[f"mia_{suffix}{ci}"] = audit_metrics.get(f"mia_{suffix}{ci}")
            if f"mia_patient_{suffix}{ci}" in audit_metrics:
                row[f"mia_patient_{suffix}{ci}"] = audit_metrics[f"mia_patient_{suffix}{ci}"]
    for name in _attack_names(audit_metrics):
        for suffix in MIA_COLUMNS:
            for ci in _CI:
                row[f"mia_{name}_{suffix}{ci}"] = audit_metrics.get(f"mia_{name}_{suffix}{ci}")
    for key in ("mia_n_members", "mia_n_nonmembers", "mia_n_reference_models"):
        row[key] = audit_metrics.get(key)
    row |= {k: v for k, v in audit_metrics.items() if k.startswith(_EXTRA_PREFIXES)}
    return row


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _epsilon_text(row: dict[str, Any]) -> str:
    if row.get("epsilon") is None:
        return "inf (non-private)"
    return f"{row['epsilon']:.2f} (target {row['target_epsilon']:g})" if row.get(
        "target_epsilon") is not None else f"{row['epsilon']:.2f}"


def _ci_text(row: dict[str, Any], key: str) -> str:
    """``value [low, high]``, "n/r" when unresolved (None), "-" when absent."""
    if key not in row:
        return "-"
    if row.get(key) is None:
        return "n/r"
    low, high = row.get(f"{key}_ci_low"), row.get(f"{key}_ci_high")
    if low is None or high is None:
        return _fmt(row[key])
    return f"{_fmt(row[key])} [{_fmt(low)}, {_fmt(high)}]"


def _table(header: Sequence[str], lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return "\n".join(out)


def table_markdown(rows: list[dict[str, Any]], title: str = "Privacy-utility table") -> str:
    """Markdown: utility and the declared attack (95 % intervals), every attack beside it,
    extraction/inversion."""
    main = _table(
        ["privacy", "epsilon", "test acc", "test AUC", "declared MIA", "MIA AUC [95% CI]",
         "TPR@1%FPR [95% CI]", "TPR@0.1%FPR [95% CI]"],
        [[r["privacy"], _epsilon_text(r), _fmt(r.get("test_acc")), _fmt(r.get("test_auc")),
          _fmt(r.get("mia_attack"))] + [_ci_text(r, f"mia_{s}") for s in MIA_COLUMNS]
         for r in rows])
    per_attack = _table(
        ["privacy", "attack", "AUC [95% CI]", "TPR@1%FPR [95% CI]", "TPR@0.1%FPR [95% CI]"],
        [[r["privacy"], name] + [_ci_text(r, f"mia_{name}_{s}") for s in MIA_COLUMNS]
         for r in rows for name in _attack_names(k for r in rows for k in r)
         if r.get(f"mia_{name}_auc") is not None])
    if any("mia_patient_auc" in r for r in rows):
        per_attack += "\n\nPatient level (mean image score per patient):\n\n" + _table(
            ["privacy", "MIA AUC [95% CI]", "TPR@1%FPR [95% CI]"],
            [[r["privacy"], _ci_text(r, "mia_patient_auc"),
              _ci_text(r, "mia_patient_tpr_at_1pct_fpr")] for r in rows])
    parts = [f"# {title}", "", main, "", "## Membership inference per attack", "", per_attack]
    extra = sorted({k for r in rows for k in r if k.startswith(_EXTRA_PREFIXES)})
    if extra:
        parts += ["", "## Extraction (largest budget) and inversion", "",
                  _table(["privacy", *extra],
                         [[r["privacy"], *(_fmt(r.get(k)) for k in extra)] for r in rows])]
    first = rows[0] if rows else {}
    parts += ["", f"Members / non-members audited: {_fmt(first.get('mia_n_members'), 0)} / "
              f"{_fmt(first.get('mia_n_nonmembers'), 0)} (deduplicated by content hash), "
              f"{_fmt(first.get('mia_n_reference_models'), 0)} reference models. AUC: stratified "
              "bootstrap 95 % interval; TPR: Clopper-Pearson 95 % interval; n/r = not resolved "
              "(fewer than 10 false positives expected among the non-members at that FPR). "
              "Epsilon is the whole run's (accountant and delta in the CSV).", ""]
    return "\n".join(parts)


def table_csv(rows: list[dict[str, Any]]) -> str:
    """CSV with the union of the rows' columns (first-seen order)."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys)
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def privacy_utility_figure(rows: list[dict[str, Any]]) -> Figure:
    """Utility (test acc/AUC, left) and leakage (declared MIA AUC, TPR@1%FPR, right) against
    epsilon (log scale); the non-private model sits at the right edge, marked "inf"."""
    private = [r for r in rows if r.get("epsilon") is not None]
    eps = [float(r["epsilon"]) for r in private]
    inf_x = max(eps) * 4 if eps else 1.0
    xs = [float(r["epsilon"]) if r.get("epsilon") is not None else inf_x for r in rows]
    order = np.argsort(xs)
    fig = Figure(figsize=(9, 3.8))
    panels = (("utility", ("test_acc", "test_auc")),
              ("membership inference (declared attack)", ("mia_auc", "mia_tpr_at_1pct_fpr")))
    for i, (title, keys) in enumerate(panels):
        ax = fig.add_subplot(1, 2, i + 1)
        for key in keys:
            ys = [rows[j].get(key) for j in order]
            ax.plot([xs[j] for j in order], [np.nan if y is None else y for y in ys],
                    marker="o", label=key)
        ax.set_xscale("log")
        ticks = sorted(set(xs))
        ax.set_xticks(ticks, [("inf" if x == inf_x and any(r.get("epsilon") is None
                                                           for r in rows) else f"{x:.2g}")
                              for x in ticks])
        ax.minorticks_off()
        ax.set_xlabel("epsilon")
        ax.set_ylim(0, 1.02)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def inversion_figure(results: Sequence[Any], class_means: Any,
                     class_names: Sequence[str]) -> Figure:
    """Class-average images (top) and inversion reconstructions (bottom) with SSIM to the own
    and the closest other class average. ``class_means`` (K,C,H,W) in [0,1]."""
    k = len(results)
    fig = Figure(figsize=(2.2 * k, 4.6))
    for i, res in enumerate(results):
        for row, (image, text) in enumerate((
                (class_means[res.target_class], f"mean {class_names[res.target_class]}"),
                (res.reconstruction, f"SSIM own {res.ssim_own:.2f}\nother {res.ssim_other:.2f}"))):
            ax = fig.add_subplot(2, k, row * k + i + 1)
            img = np.transpose(np.asarray(image, dtype=float), (1, 2, 0))
            ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
            ax.set_title(text, fontsize=8)
            ax.axis("off")
    fig.suptitle("class-representative inversion (not individual records)", fontsize=9)
    fig.tight_layout()
    return fig
