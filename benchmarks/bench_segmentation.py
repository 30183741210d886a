"""How lesion conspicuity sets a segmenter's robustness: a contrast sweep on the 2D phantoms.

For each lesion contrast range (brightness above the tissue, [0, 1] scale) this generates the
SYNTHETIC phantoms, trains the default UNet (same config as the ``segmentation`` stage) and
measures on the test images: clean Dice, Dice under random sign noise and under PGD-10 at
L-inf 8/255, and the success rate (target Dice >= 0.9) of the erase attack (PGD-30 towards an
all-background mask) at several budgets, with the time per attack. No reference library
attacks segmenters, so the baseline here is random noise of the same norm.

    .venv/bin/python benchmarks/bench_segmentation.py --contrasts 0.35-0.55 0.2-0.35 0.12-0.25
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from medsec.data.phantoms import generate_phantom_arrays
from medsec.segmentation.config import SegAttackConfig, SegmentationConfig
from medsec.segmentation.data import SegData, SegSplit
from medsec.segmentation.job import evaluate_segmenter, run_attack, train_segmenter


def phantoms(contrast: tuple[float, float], n_train: int, n_eval: int, seed: int) -> SegData:
    arrays = generate_phantom_arrays(n_train, n_eval, n_eval, 32, seed, contrast)
    splits = {s: SegSplit(arrays[f"{s}_images"][:, None].astype(np.float32) / 255,
                          arrays[f"{s}_masks"].astype(np.int64)) for s in ("train", "val", "test")}
    return SegData("phantoms", splits, 2, f"contrast-{contrast[0]}-{contrast[1]}")


def sweep_one(contrast: tuple[float, float], args: argparse.Namespace) -> dict[str, float]:
    data = phantoms(contrast, args.n_train, args.n_eval, args.seed)
    trained = train_segmenter(SegmentationConfig(epochs=args.epochs, seed=args.seed), data)
    test = data.splits["test"]
    row = {"clean_dice": evaluate_segmenter(trained.model, test, 2)["test_dice"],
           "fit_s": trained.fit.seconds}
    pgd = run_attack(trained.model, SegAttackConfig(name="pgd", steps=10), test, args.n_eval, 2)
    row |= {"noise8_dice": pgd.metrics["dice_noise"], "pgd8_dice": pgd.metrics["dice_adv"],
            "pgd_s": pgd.metrics["seconds"]}
    for budget in args.erase_budgets:
        spec = SegAttackConfig(name="erase", kind="erase", eps=budget / 255, steps=30)
        m = run_attack(trained.model, spec, test, args.n_eval, 2).metrics
        row[f"erase{budget}_success"] = m["target_success_rate"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--contrasts", nargs="+", default=["0.35-0.55", "0.2-0.35", "0.12-0.25"],
                        help="lesion contrast ranges low-high (default first = built-in data)")
    parser.add_argument("--erase-budgets", nargs="+", type=int, default=[8, 16, 24, 48],
                        help="erase budgets in /255 units")
    parser.add_argument("--n-train", type=int, default=96)
    parser.add_argument("--n-eval", type=int, default=48)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = {}
    for text in args.contrasts:
        lo, hi = (float(v) for v in text.split("-"))
        start = time.perf_counter()
        rows[text] = sweep_one((lo, hi), args)
        print(f"contrast {text}: done in {time.perf_counter() - start:.0f} s", flush=True)
    keys = list(next(iter(rows.values())))
    print("\n| contrast | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for text, row in rows.items():
        print(f"| {text} | " + " | ".join(f"{row[k]:.3f}" for k in keys) + " |")


if __name__ == "__main__":
    main()
