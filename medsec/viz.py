"""Matplotlib figures (Agg backend): confusion matrix, sample grid, training curves.

Functions return a ``Figure``; saving or logging is the caller's job.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def confusion_figure(cm: np.ndarray, class_names: list[str], title: str = "") -> Figure:
    """Heat map of a (K, K) confusion matrix (rows: true, columns: predicted)."""
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(1.2 * k + 2.5, 1.2 * k + 2))
    ax.imshow(cm, cmap="Blues")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center",
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix")
    fig.tight_layout()
    return fig


def sample_grid(
    images: np.ndarray, labels: np.ndarray, class_names: list[str],
    preds: np.ndarray | None = None, n: int = 16, title: str = "",
) -> Figure:
    """Grid of up to ``n`` images (N, C, H, W) in [0,1] with true (and predicted) labels."""
    n = min(n, len(images))
    cols = min(8, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.8 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        ax = axes.ravel()[i]
        img = np.transpose(images[i], (1, 2, 0))
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
        text = f"y={class_names[int(labels[i])]}"
        if preds is not None:
            text += f"\np={class_names[int(preds[i])]}"
        ax.set_title(text, fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def curves_figure(history: list[dict[str, float]], keys: tuple[str, ...]) -> Figure:
    """Per-epoch curves of the given history keys."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    epochs = [h["epoch"] for h in history]
    for key in keys:
        ax.plot(epochs, [h.get(key, np.nan) for h in history], marker="o", label=key)
    ax.set_xlabel("epoch")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
