"""Metrics of generated images: Frechet distance, k-NN precision/recall, memorisation.

- :func:`frechet_distance`: the FID formula on any features (N, D); MedSec uses the
  penultimate layer of its own in-domain classifier, never downloaded Inception weights.
- :func:`knn_precision_recall`: Kynkaenniemi et al. 2019 ("Improved precision and recall"):
  precision = fraction of fakes inside the real k-NN manifold (fidelity), recall = fraction of
  reals inside the fake k-NN manifold (coverage).
- :func:`nearest_distances`, :func:`memorisation_metrics`: L2 distance of each fake to its
  nearest training image, compared with how close held-out real images come to the training
  set (a fake much closer than real held-out images is a likely copy of a training patient).
- :func:`synthetic_membership_scores`: membership inference against a generator: a training
  image with an unusually close synthetic neighbour is called a member.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor


def _as_2d(x: Tensor | np.ndarray, name: str) -> Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x).double()
    t = t.reshape(len(t), -1)
    if len(t) == 0:
        raise ValueError(f"{name} is empty")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return t


def frechet_distance(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to features ``a`` (N, D) and ``b`` (M, D).

    ``|mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a^1/2 S_b S_a^1/2)^1/2)`` in float64
    (symmetric eigendecompositions, so rank-deficient covariances are fine). 0 for identical
    sets; grows with a shift of the mean or a change of the spread.
    """
    x, y = _as_2d(a, "a"), _as_2d(b, "b")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dimensions differ: {x.shape[1]} vs {y.shape[1]}")
    if len(x) < 2 or len(y) < 2:
        raise ValueError("need at least 2 samples per set for a covariance")
    mu_x, mu_y = x.mean(0), y.mean(0)
    cov_x, cov_y = torch.cov(x.T), torch.cov(y.T)
    vals, vecs = torch.linalg.eigh(cov_x)
    sqrt_x = (vecs * vals.clamp_min(0).sqrt()) @ vecs.T
    middle = sqrt_x @ cov_y @ sqrt_x
    tr_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    value = (mu_x - mu_y).pow(2).sum() + cov_x.trace() + cov_y.trace() - 2 * tr_sqrt
    return float(value.clamp_min(0))


def _pairwise(a: Tensor, b: Tensor, reduce: Callable[[Tensor], Tensor] = lambda d: d,
              chunk: int = 1024) -> Tensor:
    """``reduce`` of the distances (n, M) of each chunk of ``a`` (N, D) to ``b`` (M, D),
    concatenated: (N, M) by default; chunks bound the memory."""
    return torch.cat([reduce(torch.cdist(a[i:i + chunk], b)) for i in range(0, len(a), chunk)])


def knn_radii(features: Tensor | np.ndarray, k: int = 3) -> Tensor:
    """Distance of each row of ``features`` (N, D) to its k-th nearest other row, (N,)."""
    x = _as_2d(features, "features")
    if not 0 < k < len(x):
        raise ValueError(f"k must be in [1, {len(x) - 1}] for {len(x)} samples, got {k}")
    d = _pairwise(x, x)
    return d.kthvalue(k + 1, dim=1).values  # the 1st smallest is the point itself (0)


def knn_precision_recall(
    real: Tensor | np.ndarray, fake: Tensor | np.ndarray, k: int = 3
) -> dict[str, float]:
    """``{"precision", "recall"}`` in [0, 1] of fake features (M, D) against real (N, D).

    A sample lies in a manifold when it is within the k-NN radius of at least one of the
    manifold's points. Identical sets give 1 / 1; disjoint, far-apart sets 0 / 0.
    """
    x, y = _as_2d(real, "real"), _as_2d(fake, "fake")
    r_real, r_fake = knn_radii(x, k), knn_radii(y, k)
    d = _pairwise(y, x)  # (M, N)
    precision = (d <= r_real.unsqueeze(0)).any(dim=1).double().mean()
    recall = (d <= r_fake.unsqueeze(1)).any(dim=0).double().mean()
    return {"precision": float(precision), "recall": float(recall)}


def nearest_distances(queries: Tensor | np.ndarray, references: Tensor | np.ndarray) -> Tensor:
    """L2 distance (flattened pixels or features) of each query to its nearest reference, (N,)."""
    q, r = _as_2d(queries, "queries"), _as_2d(references, "references")
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"dimensions differ: {q.shape[1]} vs {r.shape[1]}")
    return _pairwise(q, r, lambda d: d.min(dim=1).values)


def memorisation_metrics(fake: Tensor | np.ndarray, train: Tensor | np.ndarray,
                         holdout: Tensor | np.ndarray, copy_quantile: float = 0.01
                         ) -> dict[str, float]:
    """How close fakes come to training images, relative to real held-out images.

    ``nn_fake_to_train_median``: median distance of a fake to its nearest training image;
    ``nn_holdout_to_train_median``: the same for held-out real images (the natural scale);
    ``nn_distance_ratio``: their ratio (well below 1: the generator reproduces training
    images); ``copy_fraction``: fraction of fakes closer to a training image than the
    ``copy_quantile`` quantile of held-out distances (likely copies of training patients).
    """
    if not 0 <= copy_quantile <= 1:
        raise ValueError(f"copy_quantile must be in [0, 1], got {copy_quantile}")
    d_fake, d_hold = nearest_distances(fake, train), nearest_distances(holdout, train)
    hold_median, threshold = float(d_hold.median()), torch.quantile(d_hold, copy_quantile)
    return {"nn_fake_to_train_median": float(d_fake.median()),
            "nn_holdout_to_train_median": hold_median,
            "nn_distance_ratio": float(d_fake.median()) / max(hold_median, 1e-12),
            "copy_fraction": float((d_fake < threshold).double().mean())}


def synthetic_membership_scores(members: Tensor | np.ndarray, nonmembers: Tensor | np.ndarray,
                                synthetic: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Membership scores (higher = "member"): minus the distance to the nearest synthetic image.

    ``members``: images the generator was trained on; ``nonmembers``: images from the same
    distribution it never saw. Feed the two arrays to
    :func:`medsec.metrics.privacy.mia_metrics` for AUC and TPR at low FPR.
    """
    return (-nearest_distances(members, synthetic).numpy(),
            -nearest_distances(nonmembers, synthetic).numpy())
