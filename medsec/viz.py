"""Matplotlib figures (Agg backend): confusion matrix, sample grid, training curves.

Functions return a ``Figure``; saving or logging is the caller's job.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402


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
    ax.set(xlabel="predicted", ylabel="true", title=title or "confusion matrix")
    fig.tight_layout()
    return fig


def _label_text(label: np.ndarray | int, class_names: list[str]) -> str:
    """A class name, or for a multi-hot row (L,) the present findings joined by ``+``."""
    if np.ndim(label) == 1:
        return "+".join(n for n, v in zip(class_names, label, strict=True) if v >= 0.5) or "none"
    return class_names[int(label)]


def sample_grid(images: np.ndarray, labels: np.ndarray, class_names: list[str],
                preds: np.ndarray | None = None, n: int = 16, title: str = "") -> Figure:
    """Grid of up to ``n`` images (N, C, H, W) in [0,1] with true (and predicted) labels
    (int (N,), or multi-hot (N, L): the present findings joined by ``+``)."""
    n = min(n, len(images))
    cols, rows = min(8, n), int(np.ceil(n / min(8, n)))
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.8 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i in range(n):
        ax = axes.ravel()[i]
        img = np.transpose(images[i], (1, 2, 0))
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
        pred = "" if preds is None else f"\np={_label_text(preds[i], class_names)}"
        ax.set_title(f"y={_label_text(labels[i], class_names)}{pred}", fontsize=7)
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


def _imshow(ax, image: np.ndarray, **kwargs) -> None:
    """Show one (C, H, W) image in [0, 1] (grey for one channel) without axes."""
    img = np.transpose(image, (1, 2, 0))
    ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap=kwargs.pop("cmap", "gray"),
              vmin=0, vmax=1, **kwargs)
    ax.set(xticks=[], yticks=[])


def robustness_curve_figure(rows: list[dict], title: str = "", value: str = "robust_acc",
                            ylabel: str = "accuracy") -> Figure:
    """A score against epsilon, one line per attack, from rows ``{attack, eps, <value>,
    norm}`` (default: robust accuracy; eps in pixel units, plotted in grey levels x/255 for
    L-inf, as is for L2); one panel per norm; ``worst_case`` is drawn dashed black."""
    norms = list(dict.fromkeys(r.get("norm", "linf") for r in rows)) or ["linf"]
    fig, axes = plt.subplots(1, len(norms), figsize=(6 * len(norms), 4), squeeze=False)
    for ax, norm in zip(axes[0], norms, strict=True):
        part = [r for r in rows if r.get("norm", "linf") == norm]
        for name in dict.fromkeys(r["attack"] for r in part):
            scale = 255 if norm == "linf" else 1
            pts = sorted((r["eps"] * scale, r[value]) for r in part if r["attack"] == name)
            style = ({"color": "black", "linestyle": "--", "linewidth": 2, "zorder": 1}
                     if name == "worst_case" else {})
            ax.plot(*zip(*pts, strict=True), marker="o", label=name, **style)
        ax.set(xlabel=f"{norm} epsilon (grey levels, x/255)" if norm == "linf"
               else f"{norm} epsilon", ylabel=ylabel, ylim=(-0.02, 1.02),
               title=title or "robustness curve")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def adversarial_grid(clean: np.ndarray, labels: np.ndarray, clean_pred: np.ndarray,
                     attacks: list[tuple[str, np.ndarray, np.ndarray]], class_names: list[str],
                     title: str = "") -> Figure:
    """Rows: the clean images (N, C, H, W) with labels and predictions, then per attack
    ``(name, adversarial (N, C, H, W), predictions (N,))`` the adversarial images (fooled
    predictions in red) and their perturbation amplified to the full grey range (mid-grey =
    unchanged). Drawn as one mosaic image, so dozens of tiles stay cheap."""
    n, c, h, w = clean.shape
    rows: list[tuple[str, np.ndarray, list[str], list[str]]] = [(
        "clean", clean,
        [f"y={class_names[int(y)]}\np={class_names[int(p)]}" for y, p in zip(labels, clean_pred,
                                                                            strict=True)],
        ["black"] * n)]
    for name, adv, pred in attacks:
        delta = adv - clean
        scale = np.abs(delta).reshape(n, -1).max(axis=1)
        amplified = 0.5 + 0.5 * delta / np.maximum(scale, 1e-12).reshape(n, 1, 1, 1)
        rows.append((name, adv, [f"p={class_names[int(p)]}" for p in pred],
                     ["red" if int(p) != int(y) else "black" for p, y in zip(pred, labels,
                                                                            strict=True)]))
        rows.append(("perturbation", amplified, [f"max {v * 255:.1f}/255" for v in scale],
                     ["dimgray"] * n))
    gap, top = max(2, w // 8), max(8, h // 2)
    canvas = np.ones((len(rows) * (h + top), n * (w + gap) - gap, c), dtype=np.float32)
    inch = 1.0 / h  # one tile is about one inch
    fig, ax = plt.subplots(figsize=(canvas.shape[1] * inch + 0.4, canvas.shape[0] * inch + 0.3))
    for r, (name, images, texts, colors) in enumerate(rows):
        y0 = r * (h + top) + top
        for j in range(n):
            x0 = j * (w + gap)
            canvas[y0 : y0 + h, x0 : x0 + w] = np.transpose(images[j], (1, 2, 0))
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), w, h, fill=False, linewidth=0.4,
                                   edgecolor="silver"))
            ax.text(x0 + w / 2, y0 - 1, texts[j], ha="center", va="bottom", fontsize=6,
                    color=colors[j])
        ax.text(-gap, y0 + h / 2, name, rotation=90, ha="right", va="center", fontsize=7)
    ax.imshow(canvas[..., 0] if c == 1 else canvas, cmap="gray", vmin=0, vmax=1,
              interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    fig.subplots_adjust(left=0.3 / fig.get_figwidth(), right=0.99, bottom=0.01,
                        top=1 - 0.3 / fig.get_figheight())
    return fig


def scaling_attack_figure(source: np.ndarray, adversarial: np.ndarray, downscaled: np.ndarray,
                          target: np.ndarray, source_labels: np.ndarray,
                          target_labels: np.ndarray, pred: np.ndarray, class_names: list[str],
                          n: int = 4) -> Figure:
    """Image-scaling attack, one row per example: the large source, the attack image (looks
    like the source), what the model sees after downscaling, and the intended target."""
    n = min(n, len(source))
    fig, axes = plt.subplots(n, 4, figsize=(8, 2.2 * n), squeeze=False)
    titles = ("source y={}", "attack image", "after resize: p={}", "target y={}")
    for i in range(n):
        images = (source[i], adversarial[i], downscaled[i], target[i])
        names = (class_names[int(source_labels[i])], "", class_names[int(pred[i])],
                 class_names[int(target_labels[i])])
        for j in range(4):
            _imshow(axes[i, j], images[j])
            axes[i, j].set_title(titles[j].format(names[j]), fontsize=8)
    fig.suptitle("image-scaling attack on resize -> classifier")
    fig.tight_layout()
    return fig


def reconstruction_grid(rows: list[tuple[str, np.ndarray, np.ndarray]], n: int = 4,
                        title: str = "") -> Figure:
    """Originals above their reconstructions: one pair of figure rows per entry
    ``(label, originals (N,C,H,W), reconstructions (N,C,H,W))`` (both in [0, 1], matched),
    at most ``n`` images each (e.g. gradient inversion per setting and batch size)."""
    cols = max(1, min(n, max((len(o) for _, o, _ in rows), default=1)))
    fig, axes = plt.subplots(2 * len(rows), cols, figsize=(1.3 * cols + 1.6, 2.5 * len(rows)),
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for r, (label, originals, recon) in enumerate(rows):
        for c in range(min(cols, len(originals))):
            for k, images in enumerate((originals, recon)):
                ax = axes[2 * r + k, c]
                ax.axis("on")
                _imshow(ax, images[c])
        axes[2 * r, 0].set_ylabel("private", fontsize=7)
        axes[2 * r + 1, 0].set_ylabel("reconstructed", fontsize=7)
        axes[2 * r, 0].set_title(label, fontsize=7, loc="left")
    height = 2.5 * len(rows)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / height if title else 1))
    return fig
