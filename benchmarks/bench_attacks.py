"""Speed and strength of medsec attacks against ART at equal work, on the pipeline's model.

Trains (or loads) the pipeline's default classifier - ``build_classifier("small_cnn", ...)``,
the MONAI network with normalisation as its first layer - briefly on the PneumoniaMNIST
training split, then runs FGSM, PGD-10, DeepFool, Square and C&W-L2 from ``medsec.attacks``
and from ART on the first ``--n`` test images with the same model, threads, batch size and
attack settings: the same steps and step sizes, no early stopping (ART has none), one random
start, the same overshoot, C&W's learning rate and search steps. Prints images/second (median
over ``--repeats`` interleaved rounds), the speed ratio ours/ART and both robust accuracies
(:func:`medsec.metrics.robustness.robust_accuracy`: correct before and after).

    .venv/bin/python benchmarks/bench_attacks.py --n 128 --repeats 3
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medsec.attacks import CWL2, FGSM, PGD, Attack, DeepFool, Square
from medsec.metrics.robustness import robust_accuracy
from medsec.models.factory import build_classifier
from medsec.training.checkpoint import load_classifier

ROOT = Path(__file__).resolve().parents[1]
EPS = 8 / 255


def load_split(path: Path, split: str) -> tuple[Tensor, Tensor]:
    """Images (N, 1, 28, 28) float32 in [0, 1] and labels (N,) int64 of a MedMNIST npz split."""
    with np.load(path) as data:
        images = torch.from_numpy(data[f"{split}_images"].astype(np.float32) / 255.0)
        labels = torch.from_numpy(data[f"{split}_labels"].reshape(-1).astype(np.int64))
    return images[:, None], labels


def pipeline_model(path: Path, epochs: int, seed: int, checkpoint: Path | None) -> nn.Module:
    """The pipeline's classifier: loaded from a ``models/classifier.pt``-style checkpoint, or
    ``small_cnn`` (batch norm, training-set normalisation) trained ``epochs`` with Adam."""
    if checkpoint is not None:
        return load_classifier(checkpoint)[0].eval()
    x, y = load_split(path, "train")
    torch.manual_seed(seed)
    model = build_classifier("small_cnn", 1, 2, (28, 28), [float(x.mean())], [float(x.std())])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0])
        for i in range(0, x.shape[0], 64):
            idx = perm[i : i + 64]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@dataclass
class Row:
    name: str
    ours_ips: float
    art_ips: float
    ours_acc: float
    art_acc: float
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.ours_ips / self.art_ips


def interleaved_median_times(fns: list[Callable[[], Any]], repeats: int) -> list[tuple[float, Any]]:
    """Median wall time of each function over ``repeats`` rounds, and its last result.

    The functions alternate within each round so that load from other processes on a shared
    machine affects them alike.
    """
    times: list[list[float]] = [[] for _ in fns]
    outs: list[Any] = [None for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            outs[i] = fn()
            times[i].append(time.perf_counter() - start)
    return [(statistics.median(t), o) for t, o in zip(times, outs, strict=True)]


def predict(model: nn.Module, images: Tensor | np.ndarray) -> Tensor:
    """Predicted classes (N,) of ``model`` on images (N, 1, 28, 28)."""
    with torch.inference_mode():
        return model(torch.as_tensor(images)).argmax(1)


def median_l2(model: nn.Module, adv: Tensor | np.ndarray, x: Tensor, y: Tensor) -> float:
    """Median L2 norm of the perturbations that fool the model (nan if none do)."""
    adv_t = torch.as_tensor(adv)
    norms = (adv_t - x).flatten(1).norm(dim=1)[predict(model, adv_t) != y]
    return float(norms.median()) if norms.numel() else float("nan")


def build_pairs(
    model: nn.Module, classifier: Any, args: argparse.Namespace
) -> dict[str, tuple[Attack, Any, bool]]:
    """name -> (our attack, ART attack, minimal-norm?) with the same settings."""
    from art.attacks.evasion import (
        CarliniL2Method,
        FastGradientMethod,
        ProjectedGradientDescent,
        SquareAttack,
    )
    from art.attacks.evasion import DeepFool as ArtDeepFool

    b, q = args.batch_size, args.square_queries
    return {
        "fgsm": (FGSM(model, eps=EPS), FastGradientMethod(classifier, eps=EPS, batch_size=b),
                 False),
        "pgd10": (  # final iterates, one random start: ART has no early stopping
            PGD(model, eps=EPS, alpha=2 / 255, steps=10, random_start=True, early_stop=False),
            ProjectedGradientDescent(classifier, norm=np.inf, eps=EPS, eps_step=2 / 255,
                                     max_iter=10, num_random_init=1, batch_size=b, verbose=False),
            False,
        ),
        "deepfool": (  # overshoot 0.02 both (ours scales every iterate by 1.02, ART the end)
            DeepFool(model, steps=50, overshoot=0.02),
            ArtDeepFool(classifier, max_iter=50, epsilon=0.02, nb_grads=10, batch_size=b,
                        verbose=False),
            True,
        ),
        "square": (  # ART: 1 initial + max_iter candidates; ours also counts the clean query
            Square(model, eps=EPS, n_queries=q + 2, p_init=0.8),
            SquareAttack(classifier, norm=np.inf, eps=EPS, max_iter=q, p_init=0.8,
                         nb_restarts=1, batch_size=b, verbose=False),
            False,
        ),
        "cw": (  # 5 searches x 10 steps, c0 0.1, learning rate 0.01 (ours Adam, ART line search)
            CWL2(model, c=0.1, steps=10, binary_search_steps=5, lr=0.01, abort_early=False),
            CarliniL2Method(classifier, confidence=0.0, learning_rate=0.01, binary_search_steps=5,
                            max_iter=10, initial_const=0.1, batch_size=b, verbose=False),
            True,
        ),
    }


def run(args: argparse.Namespace) -> list[Row]:
    from art.estimators.classification import PyTorchClassifier

    torch.set_num_threads(args.threads)
    data = Path(args.data) if Path(args.data).is_absolute() else ROOT / args.data
    model = pipeline_model(data, args.epochs, args.seed,
                           Path(args.checkpoint) if args.checkpoint else None)
    x_test, y_test = load_split(data, "test")
    clean = predict(model, x_test) == y_test
    print(f"clean test accuracy (all {len(y_test)}): {float(clean.double().mean()):.4f}")
    x, y = x_test[: args.n], y_test[: args.n]
    clean_pred = predict(model, x)
    classifier = PyTorchClassifier(model=copy.deepcopy(model), loss=nn.CrossEntropyLoss(),
                                   input_shape=(1, 28, 28), nb_classes=2, clip_values=(0.0, 1.0))
    x_np, y_np = x.numpy(), y.numpy()
    rows = []
    for name, (ours, art, minimal) in build_pairs(model, classifier, args).items():
        if args.attacks and name not in args.attacks:
            continue
        ours(x[:8], y[:8])  # warm-up
        art.generate(x_np[:8], y_np[:8])
        np.random.seed(args.seed)
        (t_ours, adv), (t_art, adv_art) = interleaved_median_times(
            [lambda a=ours: a(x, y), lambda a=art: a.generate(x_np, y_np)], args.repeats
        )
        note = ""
        if minimal:
            note = (f"median L2 of fooling perturbations ours {median_l2(model, adv, x, y):.3f} "
                    f"/ ART {median_l2(model, adv_art, x, y):.3f}")
        rows.append(Row(name, args.n / t_ours, args.n / t_art,
                        robust_accuracy(y, clean_pred, predict(model, adv)),
                        robust_accuracy(y, clean_pred, predict(model, adv_art)), note))
        print_row(rows[-1])
    return rows


def print_row(r: Row) -> None:
    print(
        f"{r.name:9s} ours {r.ours_ips:9.1f} img/s   ART {r.art_ips:9.1f} img/s   "
        f"ratio {r.ratio:6.2f}x   robust acc ours {r.ours_acc:.4f} ART {r.art_acc:.4f}   {r.note}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data",
        default="../shared/datasets/pneumoniamnist.npz",
        help="npz path (relative paths resolve against the repo root)",
    )
    parser.add_argument("--n", type=int, default=128, help="test images to attack")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256, help="batch size of both libraries")
    parser.add_argument("--square-queries", type=int, default=100, help="Square iterations")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs (no checkpoint)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", default=None,
                        help="the pipeline's classifier checkpoint (models/classifier.pt) to load")
    parser.add_argument(
        "--attacks",
        nargs="*",
        default=None,
        help="subset of: fgsm pgd10 deepfool square cw",
    )
    args = parser.parse_args(argv)
    rows = run(args)
    print("\nsummary (images/second, median of repeats)")
    print("| attack | ours img/s | ART img/s | ours/ART | robust acc ours | robust acc ART |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r.name} | {r.ours_ips:.1f} | {r.art_ips:.1f} | {r.ratio:.2f}x | "
            f"{r.ours_acc:.4f} | {r.art_acc:.4f} |"
        )


if __name__ == "__main__":
    main()
