"""Adversarial-example detectors and their detection metrics.

A detector scores images (N, C, H, W) in [0, 1]: higher = more likely adversarial, (N,).
Scores are differentiable in the input (non-differentiable squeezers through BPDA), so a
detector-aware attack can push them down. :meth:`Detector.calibrate` sets the threshold at a
false-positive rate on clean images (the 1 - fpr quantile of their scores) and the scale
(their standard deviation) the adaptive attack normalises by.

- :class:`MahalanobisDetector` (Lee et al. 2018): class-conditional Gaussians with a tied
  (Ledoit-Wolf shrunk) covariance on penultimate features; score = distance to the closest
  class mean. The input-preprocessing and feature-ensemble refinements are not used.
- :class:`SqueezeDetector` (Xu et al. 2018): max L1 distance between the softmax on x and on
  its squeezed versions (bit depth, median filter); for a multi-label model the vector of
  per-finding sigmoids.
- :class:`MagNetDetector` (Meng & Chen 2017): mean absolute reconstruction error.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits
from torch import Tensor, nn

from medsec.attacks.base import model_guard
from medsec.defenses.autoencoder import PixelAutoEncoder, require_trained
from medsec.defenses.base import DefenseError
from medsec.defenses.features import features_and_logits
from medsec.defenses.transforms import BitDepth, MedianFilter, straight_through
from medsec.metrics.privacy import roc_points, tpr_at_fpr
from medsec.training.devices import model_device


class Detector(nn.Module):
    """Base class: ``forward(x)`` = :meth:`score`; ``flag(x)`` = score above threshold."""

    name: ClassVar[str] = "detector"

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.threshold: float | None = None
        self.scale: float = 1.0
        self.fpr: float | None = None

    def _score(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _check_ready(self) -> None:
        """Raise :class:`DefenseError` unless everything the score needs was fitted."""

    def forward(self, x: Tensor) -> Tensor:
        self._check_ready()
        return self._score(x)

    def scores(self, x: Tensor, batch_size: int = 256) -> Tensor:
        """Scores (N,) without gradients, in batches, model in eval mode."""
        device = model_device(self.model)  # batches run on the model's device
        with model_guard(self), torch.no_grad():
            outs = [self(x[i : i + batch_size].to(device))
                    for i in range(0, x.shape[0], batch_size)]
        return torch.cat(outs).to(x.device) if outs else torch.empty(0)

    def calibrate(self, clean: Tensor, fpr: float = 0.05) -> float:
        """Threshold at false-positive rate ``fpr`` on ``clean`` images; returns it."""
        if not 0 < fpr < 1:
            raise ValueError(f"fpr must be in (0, 1), got {fpr}")
        s = self.scores(clean).double()
        self.threshold = float(torch.quantile(s, 1 - fpr))
        self.scale = max(float(s.std()), 1e-12) if s.numel() > 1 else 1.0
        self.fpr = fpr
        return self.threshold

    def require_threshold(self) -> float:
        if self.threshold is None:
            raise DefenseError(
                f"the {self.name} detector has no threshold: call calibrate(clean_images) after "
                "fitting it"
            )
        return self.threshold

    def flag(self, x: Tensor, batch_size: int = 256) -> Tensor:
        """(N,) bool: rejected as adversarial."""
        return self.scores(x, batch_size) > self.require_threshold()


class MahalanobisDetector(Detector):
    """Mahalanobis distance of penultimate features to the closest class mean."""

    name = "mahalanobis"

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.register_buffer("means", torch.empty(0))
        self.register_buffer("precision", torch.empty(0))

    def fit(self, images: Tensor, labels: Tensor, batch_size: int = 256) -> MahalanobisDetector:
        """Class means and the tied, shrunk covariance of the features of ``images``."""
        device = model_device(self.model)  # features on the model's device, fit on the CPU
        with model_guard(self.model), torch.no_grad():
            feats = torch.cat([features_and_logits(self.model, images[i : i + batch_size]
                                                   .to(device))[0].cpu()
                               for i in range(0, images.shape[0], batch_size)]).double()
        labels = labels.cpu()
        classes = torch.unique(labels)
        if len(classes) < 2:
            raise DefenseError("the Mahalanobis detector needs training images of >= 2 classes")
        num_classes = int(labels.max()) + 1
        means = torch.zeros(num_classes, feats.shape[1], dtype=torch.float64)
        for c in classes.tolist():
            means[c] = feats[labels == c].mean(0)
        centred = (feats - means[labels]).numpy()
        with threadpool_limits(torch.get_num_threads()):  # BLAS threads as torch's
            precision = LedoitWolf(assume_centered=True).fit(centred).precision_
        self.means = means[classes].float().to(device)
        self.precision = torch.from_numpy(np.ascontiguousarray(precision)).float().to(device)
        return self

    def _check_ready(self) -> None:
        if self.means.numel() == 0:
            raise DefenseError("the Mahalanobis detector is not fitted: call fit(train_images, "
                               "train_labels) first")

    def _score(self, x: Tensor) -> Tensor:
        feats, _ = features_and_logits(self.model, x)
        diff = feats[:, None, :] - self.means[None]  # (N, K, D)
        dist = ((diff @ self.precision) * diff).sum(-1)  # (N, K) squared distances
        return dist.min(dim=1).values


class SqueezeDetector(Detector):
    """Feature-squeezing detector: max over squeezers of ||softmax f(x) - softmax f(s(x))||_1
    (``multilabel``: the per-finding sigmoids, L1 distance in [0, L])."""

    name = "squeeze_detector"

    def __init__(self, model: nn.Module, bits: int = 4, median_size: int = 2,
                 multilabel: bool = False) -> None:
        super().__init__(model)
        self.squeezers = nn.ModuleList([BitDepth(bits), MedianFilter(median_size)])
        self.multilabel = bool(multilabel)

    def _probs(self, x: Tensor) -> Tensor:
        logits = self.model(x)
        return torch.sigmoid(logits) if self.multilabel else logits.softmax(1)

    def _score(self, x: Tensor) -> Tensor:
        p = self._probs(x)
        dists = [(p - self._probs(straight_through(x, s))).abs().sum(1) for s in self.squeezers]
        return torch.stack(dists).amax(0)


class MagNetDetector(Detector):
    """MagNet detector I: mean absolute reconstruction error of the autoencoder."""

    name = "magnet_detector"

    def __init__(self, model: nn.Module, autoencoder: PixelAutoEncoder | None) -> None:
        super().__init__(model)
        self.autoencoder = autoencoder

    def _check_ready(self) -> None:
        require_trained(self.autoencoder, "the MagNet detector")

    def _score(self, x: Tensor) -> Tensor:
        assert self.autoencoder is not None
        return (x - self.autoencoder(x)).abs().flatten(1).mean(1)


def detection_metrics(clean_scores: Tensor, adv_scores: Tensor, fpr: float = 0.05) -> dict:
    """``auroc`` and ``tpr_at_5pct_fpr`` (at ``fpr``) of separating adversarial (positive)
    from clean scores; NaN when either set is empty."""
    key = f"tpr_at_{fpr * 100:g}pct_fpr"
    clean, adv = clean_scores.double().numpy(), adv_scores.double().numpy()
    if len(clean) == 0 or len(adv) == 0:
        return {"auroc": float("nan"), key: float("nan")}
    truth = np.r_[np.ones(len(adv)), np.zeros(len(clean))]
    fprs, tprs = roc_points(adv, clean)
    return {"auroc": float(roc_auc_score(truth, np.r_[adv, clean])),
            key: tpr_at_fpr(fprs, tprs, fpr)}
