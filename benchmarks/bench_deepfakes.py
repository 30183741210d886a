"""DeepFakes on PneumoniaMNIST: synthetic-data utility, tampering, detection, DP synthesis.

Runs the project's own flows in a scratch working directory: ``train`` (preset
``pneumoniamnist``: the real-trained victim and reference) then ``deepfake`` with the budgets
in :data:`OVERRIDES`. Every number is logged to MLflow (the project's store
``mlflow/mlflow.db`` unless ``--tracking-uri``; run tagged ``medsec.stage=deepfake``) and
printed here, with the figures left in ``<workdir>/outputs/deepfakes/``.

    .venv/bin/python benchmarks/bench_deepfakes.py          # ~10-15 min on 2 busy CPU cores

Needs ``../shared/datasets/pneumoniamnist.npz`` (or ``--data-dir``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

OVERRIDES = [
    "train.num_threads=1",  # 2 shared cores: one thread avoids oversubscription stalls
    "deepfake.gan.epochs=10",
    "deepfake.unseen_gan.epochs=5",
    "deepfake.dataset.n_per_class=1000",
    "deepfake.max_eval=524",  # the whole val split: members/non-members 524 each
    "deepfake.tamper.epochs=5",
    "deepfake.tamper.n_images=624",  # the whole test split
    "deepfake.detector.epochs=3",
    "deepfake.dp.epsilons=[8.0,1.0]",
    "deepfake.dp.epochs=8",
]

ROWS = [
    ("victim (trained on real), test acc", "real_test_acc"),
    ("TSTR acc (trained on synthetic only)", "tstr_acc"),
    ("TSTR AUC", "tstr_auc"),
    ("FD in classifier feature space", "fd_classifier"),
    ("  same, real train vs real val (floor)", "fd_real_baseline"),
    ("k-NN precision / recall", ("precision_knn", "recall_knn")),
    ("NN distance fake->train / holdout->train", "nn_distance_ratio"),
    ("copy fraction", "copy_fraction"),
    ("membership AUC (nearest synthetic)", "gen_mia_auc"),
    ("detector AUROC, seen generator", "detector_auc_seen"),
    ("detector AUROC, unseen generator", "detector_auc_unseen"),
    ("tamper flip rate (victim)", "tamper_flip_rate"),
    ("  to normal / to pneumonia", ("tamper_flip_rate_to_class_0", "tamper_flip_rate_to_class_1")),
    ("  surrogate flip rate (attacker's model)", "tamper_surrogate_flip_rate"),
    ("tamper SSIM outside region / whole", ("tamper_ssim_outside", "tamper_ssim")),
    ("tamper max change outside region", "tamper_max_change_outside"),
    ("real-vs-tampered detector AUROC", "tamper_detector_auc"),
    ("DP eps 8: spent eps / TSTR acc / AUC", ("dp_eps8_epsilon", "dp_eps8_tstr_acc",
                                               "dp_eps8_tstr_auc")),
    ("DP eps 8: membership AUC / FD", ("dp_eps8_gen_mia_auc", "dp_eps8_fd_classifier")),
    ("DP eps 1: spent eps / TSTR acc / AUC", ("dp_eps1_epsilon", "dp_eps1_tstr_acc",
                                               "dp_eps1_tstr_auc")),
    ("DP eps 1: membership AUC / FD", ("dp_eps1_gen_mia_auc", "dp_eps1_fd_classifier")),
]


def _fmt(metrics: dict[str, float], keys: str | tuple[str, ...]) -> str:
    keys = (keys,) if isinstance(keys, str) else keys
    return " / ".join(f"{metrics[k]:.4g}" if k in metrics else "n/a" for k in keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/medsec-bench-deepfakes")
    parser.add_argument("--data-dir", default=str((ROOT / ".." / "shared" / "datasets").resolve()))
    parser.add_argument("--tracking-uri", default=f"sqlite:///{ROOT / 'mlflow' / 'mlflow.db'}")
    parser.add_argument("--set", action="append", default=[], help="extra override key=value")
    args = parser.parse_args()
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(workdir)
    os.environ["MEDSEC_TRACKING_URI"] = args.tracking_uri
    sys.path.insert(0, str(ROOT))

    import flows  # noqa: F401  (Prefect/GX environment defaults)
    from flows.deepfake import deepfake_flow
    from flows.train import train_flow

    overrides = [f"dataset.data_dir={args.data_dir}", *OVERRIDES, *args.set]
    start = time.perf_counter()
    train_flow(preset="pneumoniamnist", overrides=overrides)
    trained = time.perf_counter()
    result = deepfake_flow(preset="pneumoniamnist", overrides=overrides)
    done = time.perf_counter()
    metrics = result["metrics"]
    print(f"\nDeepFakes on PneumoniaMNIST (MLflow run {result['run_id']}, "
          f"store {args.tracking_uri})")
    for label, keys in ROWS:
        print(f"  {label:44s} {_fmt(metrics, keys)}")
    steps = ", ".join(f"{k[8:]} {v:.0f}s" for k, v in result["timings"].items())
    print(f"  time: victim {trained - start:.0f}s, deepfake stage {done - trained:.0f}s ({steps})")
    print(f"  figures: {workdir / 'outputs' / 'deepfakes'}")


if __name__ == "__main__":
    main()
