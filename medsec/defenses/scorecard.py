"""The defense scorecard: one markdown row per defense (undefended baseline first)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from medsec.defenses.config import DefenseEvalConfig
from medsec.defenses.evaluate import DefenseResult


def _pct(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{100 * value:.1f}"


def _worst(result: DefenseResult, family: str) -> str:
    rows = [r for r in result.attacks if r["family"] == family]
    if not rows:
        return "-"
    row = min(rows, key=lambda r: r["robust_acc"])
    return f"{_pct(row['robust_acc'])} ({row['attack']})"


def _detection(result: DefenseResult) -> str:
    keys = sorted(k for k in result.metrics if k.startswith("detection_auroc_"))
    return ", ".join(f"{k.removeprefix('detection_auroc_')} {result.metrics[k]:.3f}"
                     for k in keys if math.isfinite(result.metrics[k])) or "-"


def _certified(result: DefenseResult, radii: Sequence[float]) -> str:
    if "abstain_rate" not in result.metrics:
        return "-"
    accs = " / ".join(_pct(result.metrics[f"certified_acc_at_r{r:g}"]) for r in radii)
    return f"{accs} (abstain {_pct(result.metrics['abstain_rate'])})"


def scorecard_markdown(
    results: Sequence[DefenseResult], ev: DefenseEvalConfig, title: str, costs: bool = False
) -> str:
    """Markdown table of ``results`` (accuracies in %); ``costs`` adds the timing columns
    (kept out of the DVC-tracked file so that it stays byte-reproducible)."""
    radii = " / ".join(f"{r:g}" for r in ev.radii)
    n = int(results[0].metrics["n_examples"]) if results else 0
    head = ["defense", "kind", "clean acc", "robust acc (min)", "standard: worst",
            "adaptive: worst", "detection AUROC", f"certified acc @ L2 {radii}", "flags"]
    if costs:
        head += ["train s", "inference x"]
    lines = [
        f"# {title}", "",
        f"L-inf eps = {ev.eps:.4f} ({ev.eps * 255:.3g}/255), PGD {ev.steps} steps x "
        f"{ev.restarts} restart(s) (adaptive: {ev.restarts + 1}), Square {ev.square_queries} "
        f"queries, on the same {n} test images for every row. Accuracies in %. robust acc = "
        "the fraction of images right on the clean input and under every attack, per image: "
        "the standard ones (PGD, Square) and the adaptive one (BPDA / EOT / detector-aware / "
        "margin-loss PGD). A defense marked FLAGGED tripped a gradient-masking check: trust "
        "only its adaptive number.", "",
        "| " + " | ".join(head) + " |", "|" + "---|" * len(head),
    ]
    for r in results:
        flags = ", ".join(k for k, v in r.flags.items() if v)
        name = f"**{r.name}** FLAGGED" if r.flagged else r.name
        row = [name, r.kind, _pct(r.metrics["clean_acc"]), _pct(r.metrics["robust_acc"]),
               _worst(r, "standard"), _worst(r, "adaptive"), _detection(r),
               _certified(r, ev.radii), flags or "-"]
        if costs:
            overhead = r.costs.get("inference_overhead")
            row += [f"{r.costs.get('train_seconds', 0.0):.1f}",
                    "-" if overhead is None else f"{overhead:.2f}"]
        lines.append("| " + " | ".join(row) + " |")
    if not costs:
        lines += ["", "Costs (training seconds, inference overhead vs the undefended model) are "
                  "timings: they are logged to MLflow (`train_seconds`, `inference_overhead`, "
                  "and this table with them as `defense/scorecard.md`), not written here."]
    return "\n".join(lines) + "\n"
