"""Black-box membership inference: loss threshold and shadow models.

Every attack returns one score per queried example (N,) as float64 numpy: *higher means "more
likely a member"*. Score members and non-members separately and pass both to
:func:`medsec.metrics.privacy.mia_metrics`. Images are float32 (N,C,H,W) in [0,1], labels
int64 (N,) or, for multi-label data (several findings per image), multi-hot float32 (N, L) in
{0, 1}; models map images to logits (N, K) / (N, L) and are only queried (eval mode, no state
change).

Multi-label: the "true class" of an example is its whole finding vector ``y``, whose
probability under the model's independent per-finding sigmoids is
``P(y|x) = prod_l p(y_l|x)`` (``p(y_l|x) = sigmoid((2 y_l - 1) z_l)``), i.e.
``log P = -sum_l BCE_l``. LiRA's ``phi`` is its logit scaling ``log(P / (1 - P))``
(:func:`logit_confidence`), RMIA's ``p(x|theta)`` is ``P`` (``= sigmoid(phi)``), the loss
attack's loss is the training loss (BCE averaged over findings, a monotone function of ``P``).

- :func:`loss_threshold_scores` (Yeom et al. 2018): score = -loss (cross-entropy, or BCE
  averaged over the findings for multi-label).
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


def is_multilabel(labels: Tensor | np.ndarray) -> bool:
    """True for multi-hot labels (N, L) (several findings per image), False for int (N,)."""
    return labels.ndim == 2


def per_example_loss(model: nn.Module, images: Tensor, labels: Tensor) -> np.ndarray:
    """The training loss of each example (N,) float64: cross-entropy for int labels (N,), BCE
    averaged over the L findings for multi-hot labels (N, L)
    (:func:`medsec.training.module.classification_loss`)."""
    from medsec.training.module import classification_loss

    logits = predict_logits(model, images).double()
    targets = labels.double() if is_multilabel(labels) else labels.long()
    return classification_loss(logits, targets, reduction="none").numpy()


def true_log_prob(logits: Tensor, labels: Tensor) -> Tensor:
    """``log p(y|x)`` (N,) float64 of the true label: log-softmax of the true class for int
    labels (N,); for multi-hot (N, L) the log-probability of the whole finding vector under
    independent sigmoids, ``sum_l log sigmoid((2 y_l - 1) z_l) = -sum_l BCE_l`` (stable)."""
    logits = logits.double()
    if is_multilabel(labels):
        sign = 2.0 * labels.double() - 1.0
        return F.logsigmoid(sign * logits).sum(dim=1)
    return torch.log_softmax(logits, dim=1).gather(1, labels.long().view(-1, 1)).squeeze(1)


def loss_threshold_scores(model: nn.Module, images: Tensor, labels: Tensor) -> np.ndarray:
    """Yeom et al. (2018) loss attack: score = -loss (N,); members have lower loss."""
    return -per_example_loss(model, images, labels)


def logit_confidence(logits: Tensor, labels: Tensor) -> np.ndarray:
    """LiRA's ``phi = log(p_y / (1 - p_y))`` (N,), computed stably from logits (N,K):
    ``z_y - logsumexp_{j != y} z_j``.

    Multi-hot labels (N, L): ``phi = log(P / (1 - P))`` with ``P = prod_l p(y_l|x)`` the
    probability of the true finding vector (:func:`true_log_prob`), as
    ``log P - log(-expm1(log P))``; for L = 1 it is ``(2y - 1) z``, the binary case of the
    single-label formula, and it is increasing in ``P`` (so in ``-sum BCE``)."""
    logits = logits.double()
    if is_multilabel(labels):
        log_p = true_log_prob(logits, labels).clamp(max=-1e-300)  # P < 1 exactly
        return (log_p - torch.log(-torch.expm1(log_p))).numpy()
    true = logits.gather(1, labels.long().view(-1, 1)).squeeze(1)
    others = logits.scatter(1, labels.long().view(-1, 1), float("-inf"))
    return (true - torch.logsumexp(others, dim=1)).numpy()


def label_keys(labels: np.ndarray) -> np.ndarray:
    """One int per example (N,): the class for int labels (N,); for multi-hot (N, L) the
    label-set pattern (the finding vector read as a binary number, 0 = no finding), the
    "class" that per-class attacks and strata use on multi-label data."""
    labels = np.asarray(labels)
    if labels.ndim == 1:
        return labels.astype(np.int64)
    weights = 1 << np.arange(labels.shape[1], dtype=np.int64)
    return (labels.round().astype(np.int64) * weights).sum(axis=1)


def _log_probs(model: nn.Module, images: Tensor, labels: Tensor) -> np.ndarray:
    """Log-probabilities (N, K) (log-softmax) or, for multi-hot labels (N, L), the per-finding
    log-probabilities of the true value ``log p(y_l|x)`` (N, L)."""
    logits = predict_logits(model, images).double()
    if is_multilabel(labels):
        return F.logsigmoid((2.0 * labels.double() - 1.0) * logits).numpy()
    return torch.log_softmax(logits, dim=1).numpy()


def _features(log_probs: np.ndarray, labels: np.ndarray, kind: ShadowFeatures) -> np.ndarray:
    """'sorted': log-probs sorted descending plus the true class' log-prob (label-aware
    version of ML-Leaks' sorted vector); 'per_class': the raw log-prob vector. Multi-label
    (``log_probs`` already of the true finding values, (N, L)): sorted descending plus their
    sum (``log P(y|x)``) for 'sorted', the raw vector for 'per_class'."""
    if labels.ndim == 2:
        if kind == "per_class":
            return log_probs
        return np.concatenate([-np.sort(-log_probs, axis=1),
                               log_probs.sum(axis=1, keepdims=True)], axis=1)
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
    membership label falls back to the global classifier; multi-label: one per label-set
    pattern, :func:`label_keys`). ``classifier_factory(seed)`` makes
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
            feats.append(_features(_log_probs(shadow, shadow_images, shadow_labels), y,
                                   self.features))
            labels.append(label_keys(y))
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
        x = _features(_log_probs(model, images, labels), labels.numpy(), self.features)
        y = label_keys(labels.numpy())
        scores = self._global.predict_proba(x)[:, 1]
        for c, clf in self._per_class.items():
            sel = y == c
            if sel.any():
                scores[sel] = clf.predict_proba(x[sel])[:, 1]
        return scores.astype(np.float64)
