"""Figures of the DeepFake stage (Agg backend; return a Figure, the caller saves or logs it)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from medsec import viz
from medsec.deepfakes.tamper import TamperResult


def class_grid(images: np.ndarray, labels: np.ndarray, class_names: list[str],
               per_class: int = 8, title: str = "") -> Figure:
    """Up to ``per_class`` images (N, C, H, W) in [0, 1] of each class, one class per row."""
    picks = np.concatenate([np.flatnonzero(labels == k)[:per_class]
                            for k in range(len(class_names))])
    return viz.sample_grid(images[picks], labels[picks], class_names, n=len(picks), title=title)


def tamper_figure(result: TamperResult, before: np.ndarray, after: np.ndarray,
                  class_names: list[str], n: int = 6) -> Figure:
    """Columns of examples; rows: original (victim's call), region, tampered (victim's call),
    |difference| (zero outside the region)."""
    n = min(n, len(result.labels))
    fig = Figure(figsize=(1.7 * n, 7.2))
    axes = fig.subplots(4, n, squeeze=False)
    diff = (result.tampered - result.originals).abs().amax(1)
    for i in range(n):
        orig = result.originals[i].permute(1, 2, 0).numpy()
        tamp = result.tampered[i].permute(1, 2, 0).numpy()
        gray = orig.shape[-1] == 1
        show = (lambda img: img[..., 0]) if gray else (lambda img: img)
        axes[0, i].imshow(show(orig), cmap="gray", vmin=0, vmax=1)
        axes[0, i].set_title(f"y={class_names[int(result.labels[i])]}\n"
                             f"victim: {class_names[int(before[i])]}", fontsize=7)
        axes[1, i].imshow(show(orig), cmap="gray", vmin=0, vmax=1)
        axes[1, i].imshow(np.ma.masked_where(~result.regions[i].numpy(),
                                             result.regions[i].numpy()),
                          cmap="autumn", alpha=0.5)
        axes[1, i].set_title("region", fontsize=7)
        axes[2, i].imshow(show(tamp), cmap="gray", vmin=0, vmax=1)
        axes[2, i].set_title(f"-> {class_names[int(result.targets[i])]}\n"
                             f"victim: {class_names[int(after[i])]}", fontsize=7)
        axes[3, i].imshow(diff[i].numpy(), cmap="magma", vmin=0, vmax=1)
        axes[3, i].set_title("|change|", fontsize=7)
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle("tampering: region repainted, rest untouched")
    fig.tight_layout()
    return fig


def utility_figure(points: dict[float, float], real_acc: float | None = None,
                   nonprivate_acc: float | None = None) -> Figure:
    """Train-on-synthetic / test-on-real accuracy vs epsilon (log x), with reference lines."""
    fig = Figure(figsize=(5, 3.5))
    ax = fig.add_subplot(1, 1, 1)
    eps = sorted(points)
    ax.plot(eps, [points[e] for e in eps], marker="o", label="DP generator (TSTR)")
    if nonprivate_acc is not None:
        ax.axhline(nonprivate_acc, color="tab:orange", ls="--", label="non-private generator")
    if real_acc is not None:
        ax.axhline(real_acc, color="k", ls=":", label="trained on real")
    ax.set_xscale("log")
    ax.set_xlabel("epsilon")
    ax.set_ylabel("test accuracy (real test set)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig

