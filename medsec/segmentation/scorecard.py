"""The segmentation scorecard: one markdown table of every attack on every trained segmenter.

Input is the stage's metrics record (``metrics/segmentation.json``): ``clean`` and ``attacks``
of the undefended segmenter, optionally ``defended: {name: {clean, attacks}}``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from medsec.segmentation.config import SegAttackConfig

COLUMNS = (("dice_adv", "Dice after"), ("dice_noise", "Dice, noise"),
           ("target_success_rate", "target reached"), ("erased_fraction", "lesions erased"),
           ("forged_fraction", "lesions forged"), ("l2_mean", "mean L2"),
           ("ssim_mean", "SSIM"))
"""(metric key, column title) of the per-attack rows; missing metrics print as '-'."""


def _cell(value: Any) -> str:
    missing = value is None or (isinstance(value, float) and not math.isfinite(value))
    return "-" if missing else f"{float(value):.3f}"


def describe(spec: SegAttackConfig) -> str:
    """``PGD-10 L-inf 8/255, erase, lesion+4px, 4x4 blocks``-style summary of one attack."""
    method = "FGSM" if spec.method == "fgsm" else f"PGD-{spec.steps}"
    budget = f"L-inf {spec.eps * 255:.3g}/255" if spec.norm == "linf" else f"L2 {spec.eps:g}"
    parts = [f"{method} {budget}", "" if spec.kind == "untargeted" else spec.kind,
             "" if spec.region_margin is None else f"lesion+{spec.region_margin}px",
             f"{spec.scale}x{spec.scale} blocks" if spec.scale > 1 else ""]
    return ", ".join(part for part in parts if part)


def scorecard_markdown(record: dict[str, Any], specs: Sequence[SegAttackConfig] = ()) -> str:
    """Markdown: a header line per segmenter with its clean Dice, then one row per attack
    (what it is, from ``specs`` when given; Dice after the attack and under same-size noise,
    targeted success, lesions erased/forged, perturbation size and SSIM). Rows follow
    ``specs``' order, then any other attack in the record."""
    described = {spec.name: describe(spec) for spec in specs}
    models = {"undefended": record}
    for name, block in record.get("defended", {}).items():
        models[name] = block
        if block.get("transfer"):
            models[f"{name}, attacked with the undefended model's adversarial images "
                   f"(transfer)"] = {"clean": block.get("clean", {}),
                                     "attacks": block["transfer"]}
    lines = ["# Segmentation scorecard", ""]
    for name, block in models.items():
        clean = block.get("clean", {})
        lines += [f"## {name}: clean Dice {_cell(clean.get('test_dice'))}, "
                  f"IoU {_cell(clean.get('test_iou_lesion'))}, "
                  f"HD95 {_cell(clean.get('test_hd95_lesion'))} px", "",
                  "| attack | what | " + " | ".join(t for _, t in COLUMNS) + " |",
                  "|---" * (len(COLUMNS) + 2) + "|"]
        attacks = block.get("attacks", {})
        order = [n for n in described if n in attacks] + [n for n in attacks
                                                           if n not in described]
        for attack in order:
            cells = [_cell(attacks[attack].get(key)) for key, _ in COLUMNS]
            lines.append(f"| {attack} | {described.get(attack, '-')} | " + " | ".join(cells)
                         + " |")
        lines.append("")
    return "\n".join(lines)


def curve_rows(record: dict[str, Any], specs: Sequence[SegAttackConfig]) -> list[dict[str, Any]]:
    """Dice against the budget for every segmenter: rows ``{attack, eps, dice, norm}`` with
    attack ``"<segmenter> PGD"`` (the untargeted whole-image pixel-scale PGD attacks of
    ``specs``) and ``"<segmenter> noise"`` (same-size random noise); eps 0 is the clean Dice."""
    models = {"undefended": record} | dict(record.get("defended", {}))
    curve = [s for s in specs if s.kind == "untargeted" and s.method == "pgd" and s.scale == 1
             and s.region_margin is None]
    rows: list[dict[str, Any]] = []
    for name, block in models.items():
        clean = block.get("clean", {}).get("test_dice")
        for norm in dict.fromkeys(s.norm for s in curve):
            for series, key in (("PGD", "dice_adv"), ("noise", "dice_noise")):
                points = [(0.0, clean)] + [
                    (s.eps, block["attacks"][s.name].get(key)) for s in curve
                    if s.norm == norm and s.name in block.get("attacks", {})]
                rows += [{"attack": f"{name} {series}", "eps": eps, "dice": value, "norm": norm}
                         for eps, value in points
                         if value is not None and math.isfinite(value)]
    return rows
