"""Wall time of the PneumoniaMNIST attack sweep: 2 Dask worker processes vs in-process.

Trains the victim of ``configs/presets/attack_pneumoniamnist.yaml`` (small_cnn on the real
PneumoniaMNIST, ``--epochs``), then runs the preset's attack flow (all its attack specs, each
a mapped Prefect task) with ``runner.kind=local`` (Prefect's in-process thread pool) and
``runner.kind=dask`` (prefect-dask's ``DaskTaskRunner`` on a new ``LocalCluster`` of
``--workers`` single-threaded processes, cluster start-up included), interleaved, ``--reps``
times each, each run in a fresh output directory (no cache hits), all against one private
Prefect server. The transfer attacks and the image-scaling demo run in the flow's own process
whatever the runner, so they are switched off here; ``attack.n_examples`` is ``--n``.

Prints both wall times (median over reps) side by side, the ratio in-process / Dask (> 1:
Dask faster), and checks that both runners' metrics (every attack at every budget, worst
case, clean accuracy) are exactly equal.

    MEDSEC_DATA_DIR=../shared/datasets .venv/bin/python benchmarks/bench_sweep.py --n 64
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

PRESET = "attack_pneumoniamnist"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="attack.n_examples (preset: 512)")
    parser.add_argument("--epochs", type=int, default=2, help="victim training epochs")
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="medsec-bench-sweep-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MEDSEC_TRACKING_URI", f"sqlite:///{work.resolve() / 'mlflow.db'}")
    data_dir = os.environ.get("MEDSEC_DATA_DIR", str(Path("../shared/datasets").resolve()))

    import flows  # noqa: F401  (Prefect environment defaults)
    from flows.attack import attack_flow
    from flows.server import prefect_server
    from flows.train import train_flow

    base = [f"dataset.data_dir={data_dir}", f"attack.n_examples={args.n}",
            "attack.transfer=null", "attack.image_scaling.enabled=false",
            "attack.mlflow_sample=0", "attack.save_adversarial=false"]
    seconds: dict[str, list[float]] = {"local": [], "dask": []}
    metrics: dict[str, dict] = {}
    with prefect_server():
        victim = train_flow(preset=PRESET, overrides=[*base, f"train.epochs={args.epochs}"],
                            out=str(work / "train"))
        for rep in range(args.reps):
            for kind in ("local", "dask"):
                out = work / f"{kind}-{rep}"
                out.mkdir()
                start = time.perf_counter()
                result = attack_flow(
                    preset=PRESET, checkpoint=victim["checkpoint"], info=victim["info"],
                    out=str(out), overrides=[*base, f"runner.kind={kind}",
                                             f"runner.n_workers={args.workers}"])
                seconds[kind].append(time.perf_counter() - start)
                failed = [k for k, v in result["status"].items() if v != "ok"]
                assert not failed, f"{kind}: failed attacks {failed}"
                if kind in metrics:
                    assert result["metrics"] == metrics[kind], f"{kind}: not reproducible"
                metrics[kind] = result["metrics"]
    same = metrics["local"] == metrics["dask"]
    n_specs = len(metrics["local"]) and sum(1 for k in metrics["local"]
                                            if k.endswith("_robust_acc"))
    local, dask = (statistics.median(seconds[k]) for k in ("local", "dask"))
    print(f"PneumoniaMNIST attack sweep ({PRESET}, n_examples={args.n}, victim {args.epochs} "
          f"epochs, {n_specs} robust-accuracy figures, median of {args.reps} rep(s), "
          f"{os.cpu_count()} CPUs)")
    print(f"{'runner':28s} {'wall s':>8s} {'clean_acc':>9s} {'worst_case_eps8':>15s}")
    for kind, label, secs in (("local", "in-process (thread pool)", local),
                              ("dask", f"Dask LocalCluster x{args.workers}", dask)):
        m = metrics[kind]
        print(f"{label:28s} {secs:8.1f} {m.get('clean_acc', float('nan')):9.4f} "
              f"{m.get('worst_case_eps8_robust_acc', float('nan')):15.4f}")
    print(f"ratio in-process / Dask: {local / dask:.2f}  (all runs: local {seconds['local']}, "
          f"dask {seconds['dask']})")
    print(f"results identical: {same}")
    if not same:
        diff = {k for k in metrics["local"] if metrics["local"][k] != metrics["dask"].get(k)}
        raise SystemExit(f"metrics differ: {sorted(diff)[:10]}")


if __name__ == "__main__":  # required: Dask spawns its workers and re-imports __main__
    main()
