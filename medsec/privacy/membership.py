"""Black-box membership inference: loss threshold and shadow models.

Every attack returns one score per queried example (N,) as float64 numpy: *higher means "more
likely a member"*. Score members and non-members separately and pass both to
:func:`medsec.metrics.privacy.mia_metrics`. Images are float32 (N,C,H,W) in [0,1], labels
int64 (N,); models map images to logits and are only queried (eval mode, no state change).

- :func:`loss_threshold_scores` (Yeom et al. 2018): score = -cross-entropy loss.
- :class:`ShadowModelAttack` (Shokri et al. 2017): shadow models trained on random halves of
  the attacker's own data (the shadow pool, disjoint from the target's training data) imitate
  the target; a classifier learns "in vs out" from their log-probabilities.

LiRA and RMIA (reference-model attacks) live in :mod:`medsec.privacy.lira`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor, nn

from medsec.privacy.plain_train import TrainFn
from medsec.training.predict import predict_logits

ShadowFeatures = Literal["sorted", "per_class"]


def per_example_loss(model: nn.Module, images: Tensor, labels: Tensor) -> np.ndarray:
    """Cross-entropy of each example (N,) float64."""
    logits = predict_logits(model, images).double()
    return F.cross_entropy(logits, labels.long(), reduction="none").numpy()


def loss_threshold_scores(model: nn.Module, images: Tensor, labels: Tensor) -> np.ndarray:
    """Yeom et al. (2018) loss attack: score = -loss (N,); members have lower loss."""
    return -per_example_loss(model, images, labels)


def logit_confidence(logits: Tensor, labels: Tensor) -> np.ndarray:
    """LiRA's ``phi = log(p_y / (1 - p_y))`` (N,), computed stably from logits (N,K):
    ``z_y - logsumexp_{j != y} z_j``."""
    logits = logits.double()
    true = logits.gather(1, labels.long().view(-1, 1)).squeeze(1)
    others = logits.scatter(1, labels.long().view(-1, 1), float("-inf"))
    return (true - torch.logsumexp(others, dim=1)).numpy()


def _log_probs(model: nn.Module, images: Tensor) -> np.ndarray:
    return torch.log_softmax(predict_logits(model, images).double(), dim=1).numpy()


def _features(log_probs: np.ndarray, labels: np.ndarray, kind: ShadowFeatures) -> np.ndarray:
    """'sorted': log-probs sorted descending plus the true class' log-prob (label-aware
    version of ML-Leaks' sorted vector); 'per_class': the raw log-prob vector."""
    if kind == "per_class":
        return log_probs
    sorted_desc = -np.sort(-log_probs, axis=1)
    true = log_probs[np.arange(len(labels)), labels][:, None]
    return np.concatenate([sorted_desc, true], axis=1)


def _default_classifier(seed: int) -> Any:
    # On log-probabilities a linear model is as strong as boosting or forests and overfits the
    # shadow data less (checked on small overfit CNN/MLP targets).
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))


@dataclass
class ShadowModelAttack:
    """Shokri et al. (2017) shadow-model membership inference.

    ``fit`` trains ``num_shadow`` models with ``train_fn`` on random halves of the shadow pool
    (each model's other half is its "out" set) and fits the attack classifier on their
    outputs: one classifier on ``features="sorted"`` vectors, or one per true class on the full
    probability vector (``"per_class"``, Shokri's original; a class seen with only one
    membership label falls back to the global classifier). ``classifier_factory(seed)`` makes
    an sklearn classifier (default: standardised logistic regression).
    """

    train_fn: TrainFn
    num_shadow: int = 4
    features: ShadowFeatures = "sorted"
    seed: int = 0
    classifier_factory: Callable[[int], Any] = _default_classifier
    _global: Any = field(default=None, init=False, repr=False)
    _per_class: dict[int, Any] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.num_shadow < 1:
            raise ValueError(f"num_shadow must be >= 1, got {self.num_shadow}")
        if self.features not in ("sorted", "per_class"):
            raise ValueError(f"features must be 'sorted' or 'per_class', got {self.features!r}")

    def fit(self, shadow_images: Tensor, shadow_labels: Tensor) -> ShadowModelAttack:
        """Train the shadow models and the attack classifier(s); returns ``self``."""
        n = len(shadow_labels)
        if n < 4:
            raise ValueError(f"shadow pool too small ({n} examples)")
        rng = np.random.default_rng(self.seed)
        feats, labels, members = [], [], []
        for k in range(self.num_shadow):
            in_mask = np.zeros(n, dtype=bool)
            in_mask[rng.permutation(n)[: n // 2]] = True
            idx_in = torch.from_numpy(np.flatnonzero(in_mask))
            shadow = self.train_fn(shadow_images[idx_in], shadow_labels[idx_in],
                                   self.seed + 1000 + k)
            y = shadow_labels.numpy()
            feats.append(_features(_log_probs(shadow, shadow_images), y, self.features))
            labels.append(y)
            members.append(in_mask)
        x_all, y_all, m_all = np.concatenate(feats), np.concatenate(labels), np.concatenate(members)
        self._global = self.classifier_factory(self.seed).fit(x_all, m_all)
        self._per_class = {}
        if self.features == "per_class":
            for c in np.unique(y_all):
                sel = y_all == c
                if len(np.unique(m_all[sel])) == 2:
                    self._per_class[int(c)] = self.classifier_factory(self.seed).fit(
                        x_all[sel], m_all[sel])
        return self

    def score(self, model: nn.Module, images: Tensor, labels: Tensor) -> np.ndarray:
        """Attack-classifier probability of "member" for each example (N,)."""
        if self._global is None:
            raise RuntimeError("ShadowModelAttack.fit must be called before score")
        y = labels.numpy()
        x = _features(_log_probs(model, images), y, self.features)
        scores = self._global.predict_proba(x)[:, 1]
        for c, clf in self._per_class.items():
            sel = y == c
            if sel.any():
                scores[sel] = clf.predict_proba(x[sel])[:, 1]
        return scores.astype(np.float64)
