"""Class-representative model inversion (Fredrikson et al. 2015 style).

Gradient descent on the pixels of a grey start image to maximise the model's log-probability of
one class, with total-variation regularisation, kept in [0, 1]. What this recovers is a
*class-representative* image (what the model associates with the class), not any individual
training record; it is scored against class-average images: SSIM and Pearson correlation with
the target class' average versus the most similar other class' average. A reconstruction that
is closer to its own class average than to the others shows the model leaks class appearance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from skimage.metrics import structural_similarity
from torch import Tensor, nn

from medsec.metrics.image_quality import total_variation


def invert_class(model: nn.Module, target_class: int, image_shape: Sequence[int], *,
                 steps: int = 300, lr: float = 0.05, tv_weight: float = 0.1,
                 init_value: float = 0.5) -> Tensor:
    """Reconstruction (C,H,W) in [0,1] maximising ``log p(target_class | x) - tv * TV(x)``.

    Starts from a constant ``init_value`` image; Adam on the pixels, clamped to [0,1] after
    every step. The model is queried in eval mode; its parameters and mode are left unchanged.
    """
    was_training = model.training
    model.eval()
    x = torch.full((1, *image_shape), float(init_value), requires_grad=True)
    optimizer = torch.optim.Adam([x], lr=lr)
    try:
        for _ in range(steps):
            log_p = torch.log_softmax(model(x), dim=1)[0, target_class]
            loss = -log_p + tv_weight * total_variation(x)
            (grad,) = torch.autograd.grad(loss, x)
            x.grad = grad
            optimizer.step()
            with torch.no_grad():
                x.clamp_(0.0, 1.0)
    finally:
        model.train(was_training)
    return x.detach()[0]


def class_means(images: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Average image per class (K,C,H,W); NaN for a class without examples."""
    return torch.stack([images[labels == k].mean(dim=0) for k in range(num_classes)])


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else 0.0


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    return float(structural_similarity(a, b, data_range=1.0, channel_axis=0))


@dataclass(frozen=True)
class InversionResult:
    """Scores of one reconstruction: ``*_own`` vs the target class' average image and
    ``*_other`` vs the most similar other class' average."""

    target_class: int
    reconstruction: Tensor
    ssim_own: float
    ssim_other: float
    corr_own: float
    corr_other: float

    @property
    def closer_to_own(self) -> bool:
        return self.ssim_own > self.ssim_other and self.corr_own > self.corr_other


def score_reconstruction(reconstruction: Tensor, means: Tensor, target_class: int
                         ) -> InversionResult:
    """Compare a reconstruction (C,H,W) with class averages (K,C,H,W)."""
    rec = reconstruction.double().numpy()
    ssim = [_ssim(rec, m.double().numpy()) for m in means]
    corr = [_corr(rec, m.double().numpy()) for m in means]
    others = [k for k in range(len(means)) if k != target_class]
    if not others:
        raise ValueError("scoring needs at least two classes")
    return InversionResult(
        target_class=target_class, reconstruction=reconstruction,
        ssim_own=ssim[target_class], ssim_other=max(ssim[k] for k in others),
        corr_own=corr[target_class], corr_other=max(corr[k] for k in others),
    )


def class_representative_inversion(model: nn.Module, images: Tensor, labels: Tensor,
                                   num_classes: int, classes: Sequence[int] | None = None,
                                   **invert_kwargs: float | int) -> list[InversionResult]:
    """Invert each class in ``classes`` (default all) and score it against the class averages
    of ``images`` (N,C,H,W) in [0,1] / ``labels`` (N,) (e.g. the training set)."""
    means = class_means(images, labels, num_classes)
    shape = tuple(images.shape[1:])
    targets = range(num_classes) if classes is None else classes
    return [
        score_reconstruction(invert_class(model, k, shape, **invert_kwargs), means, k)  # type: ignore[arg-type]
        for k in targets
    ]


def inversion_metrics(results: Sequence[InversionResult]) -> dict[str, float]:
    """Means over classes: ``inversion_ssim_own``, ``inversion_ssim_other``,
    ``inversion_corr_own``, ``inversion_corr_other``, ``inversion_closer_to_own_rate``."""
    if not results:
        raise ValueError("no inversion results")
    out = {f"inversion_{k}": float(np.mean([getattr(r, k) for r in results]))
           for k in ("ssim_own", "ssim_other", "corr_own", "corr_other")}
    out["inversion_closer_to_own_rate"] = float(np.mean([r.closer_to_own for r in results]))
    return out
