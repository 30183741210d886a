"""DP-SGD overhead: one training epoch, non-private vs Opacus DP-SGD (hooks, ghost clipping).

The project's ``small_cnn`` with GroupNorm on PneumoniaMNIST train images (4708, 1x28x28),
the same plain torch loop for every variant, batch 64 (DP: Poisson sampling with expected
batch 64), median of ``--repeats`` epochs after one warm-up epoch. Prints seconds per epoch
(wall and process CPU time) and the ratio DP / non-private, target <= 2.5x.

    .venv/bin/python benchmarks/bench_dp.py [--repeats 3] [--threads 1] [--limit N]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from medsec.models.factory import build_classifier
from medsec.privacy.config import DPConfig
from medsec.privacy.dp import make_private
from medsec.privacy.plan import plan_dp

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA = REPO_ROOT / ".." / "shared" / "datasets" / "pneumoniamnist.npz"
TARGET_RATIO = 2.5


def load_train(path: Path, limit: int | None) -> TensorDataset:
    """PneumoniaMNIST train split: images (N,1,28,28) float32 in [0,1], labels (N,) int64."""
    with np.load(path) as npz:
        images = npz["train_images"][:limit].astype(np.float32) / 255.0
        labels = npz["train_labels"][:limit].reshape(-1).astype(np.int64)
    return TensorDataset(torch.from_numpy(images[:, None]), torch.from_numpy(labels))


def make_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_classifier("small_cnn", 1, 2, (28, 28), norm="group")


Epoch = Callable[[], None]


def plain_epoch(data: TensorDataset, batch_size: int) -> Epoch:
    net = make_net()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    loader = DataLoader(data, batch_size=batch_size, shuffle=True)

    def run() -> None:
        net.train()
        for x, y in loader:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()
            optimizer.step()

    return run


def dp_epoch(data: TensorDataset, batch_size: int, mode: str) -> Epoch:
    net = make_net()
    loader = DataLoader(data, batch_size=batch_size, shuffle=True)
    dp = DPConfig(enabled=True, noise_multiplier=1.0, max_grad_norm=1.0, accountant="rdp")
    plan = plan_dp(dp, len(data), len(loader), 1, grad_sample_mode=mode)  # type: ignore[arg-type]
    optimizer, dp_loader, state = make_private(
        net, torch.optim.Adam(net.parameters(), lr=1e-3), loader, plan
    )
    criterion = state.criterion if state.criterion is not None else nn.CrossEntropyLoss()

    def run() -> None:
        net.train()
        for x, y in dp_loader:
            optimizer.zero_grad(set_to_none=True)
            criterion(net(x), y).backward()
            optimizer.step()

    return run


def time_epochs(run: Epoch, repeats: int) -> tuple[float, float]:
    """Median (wall seconds, CPU seconds) per epoch over ``repeats`` after one warm-up."""
    run()
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        run()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--limit", type=int, default=None, help="use the first N images only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    data = load_train(args.data, args.limit)
    print(
        f"PneumoniaMNIST train: {len(data)} images, batch {args.batch_size}, "
        f"{args.threads} thread(s), median of {args.repeats} epochs"
    )

    variants: dict[str, Callable[[], Epoch]] = {
        "non-private": lambda: plain_epoch(data, args.batch_size),
        "dp-sgd hooks": lambda: dp_epoch(data, args.batch_size, "hooks"),
        "dp-sgd ghost": lambda: dp_epoch(data, args.batch_size, "ghost"),
        "dp-sgd functorch": lambda: dp_epoch(data, args.batch_size, "functorch"),
    }
    results: dict[str, tuple[float, float]] = {}
    for name, build in variants.items():
        try:
            results[name] = time_epochs(build(), args.repeats)
        except Exception as exc:  # report and go on: one variant failing is a result too
            print(f"{name:>16}: failed: {type(exc).__name__}: {str(exc).splitlines()[0]}")
            continue
        wall, cpu = results[name]
        base_wall, base_cpu = results["non-private"]
        verdict = (
            ""
            if name == "non-private"
            else (
                f"  ratio wall {wall / base_wall:.2f}x, cpu {cpu / base_cpu:.2f}x "
                f"({'ok' if cpu / base_cpu <= TARGET_RATIO else 'over'} target {TARGET_RATIO}x)"
            )
        )
        print(f"{name:>16}: {wall:6.2f} s/epoch wall, {cpu:6.2f} s/epoch cpu{verdict}")


if __name__ == "__main__":
    main()
