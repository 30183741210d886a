"""Overlay figure of a segmentation attack: image, true mask, prediction, adversarial
prediction (and the adversarial image and target). 3D volumes show their middle slice."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from medsec.segmentation.job import SegAttackResult  # noqa: E402


def _slice(a: np.ndarray) -> np.ndarray:
    """(H, W) for 2D arrays, the middle depth slice for (D, H, W)."""
    return a[a.shape[0] // 2] if a.ndim == 3 else a


def overlay_figure(result: SegAttackResult, n: int = 4, title: str = "") -> Figure:
    """Rows = examples; columns = image, true mask, predicted, adversarial image,
    adversarial prediction, target (masks drawn in red over the image)."""
    n = min(n, result.images.shape[0])
    cols = ("image", "true mask", "predicted", "adversarial", "adv. prediction", "target")
    fig, axes = plt.subplots(n, len(cols), figsize=(2 * len(cols), 2 * n), squeeze=False)
    for i in range(n):
        img = _slice(result.images[i, 0].numpy())
        adv = _slice(result.adversarial[i, 0].numpy())
        masks = [None, result.masks[i], result.pred_clean[i], None, result.pred_adv[i],
                 result.targets[i]]
        for j, (col, mask) in enumerate(zip(cols, masks, strict=True)):
            ax = axes[i, j]
            ax.imshow(adv if col.startswith("adv") else img, cmap="gray", vmin=0, vmax=1)
            if mask is not None:
                m = _slice(mask.numpy()).astype(float)
                ax.imshow(np.ma.masked_where(m == 0, m), cmap="autumn", alpha=0.6)
            ax.set(xticks=[], yticks=[])
            if i == 0:
                ax.set_title(col, fontsize=8)
    fig.suptitle(title or result.spec.name)
    fig.tight_layout()
    return fig
