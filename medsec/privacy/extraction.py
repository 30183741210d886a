"""Model extraction through a prediction API (Tramer et al. 2016; Knockoff Nets, Orekondy et al.
2019, with random query selection).

The attacker holds unlabeled images (the query pool), sends up to ``budget`` of them to the
victim's prediction interface, and trains a copy (architecture from a factory) on the answers:
soft labels when the API returns probabilities, hard labels when it returns only the class.
Queries are drawn once, in a seeded random order; budget b uses the first b of them, so larger
budgets extend smaller ones and the API is called for ``max(budgets)`` images in total.
Success is measured on held-out test images: agreement of copy and victim predictions and the
copy's accuracy on the true labels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from medsec.privacy.plain_train import TrainFn
from medsec.training.predict import predict_logits

# images (N,C,H,W) in [0,1] -> probabilities (N,K) or labels (N,) int64.
VictimPredict = Callable[[Tensor], Tensor]
QueryMode = Literal["probs", "labels"]


def victim_api(model: nn.Module, output: QueryMode = "probs",
               multilabel: bool = False) -> VictimPredict:
    """Prediction interface over ``model``: softmax probabilities or top-1 labels only;
    ``multilabel``: per-finding sigmoid probabilities (N, L) or the findings present at
    probability >= 0.5 (multi-hot float (N, L))."""
    if output not in ("probs", "labels"):
        raise ValueError(f"output must be 'probs' or 'labels', got {output!r}")

    def predict(images: Tensor) -> Tensor:
        if multilabel:
            probs = torch.sigmoid(predict_logits(model, images))
            return probs if output == "probs" else (probs >= 0.5).float()
        probs = torch.softmax(predict_logits(model, images), dim=1)
        return probs if output == "probs" else probs.argmax(dim=1)

    return predict


@dataclass(frozen=True)
class ExtractionResult:
    """One budget: ``agreement`` = P(copy label == victim label) on the test images;
    ``test_acc`` = copy accuracy on the true labels; ``victim_test_acc`` for reference.
    Multi-label: per finding (present at probability >= 0.5), averaged over images and
    findings (the macro accuracy of the classification metrics)."""

    budget: int
    mode: str
    agreement: float
    test_acc: float
    victim_test_acc: float

    def metrics(self) -> dict[str, float]:
        """``extraction_*`` metrics (log them with ``step=budget``)."""
        return {"extraction_agreement": self.agreement, "extraction_test_acc": self.test_acc,
                "extraction_victim_test_acc": self.victim_test_acc,
                "extraction_query_budget": float(self.budget)}


def _as_targets(answers: Tensor, mode: QueryMode, multilabel: bool = False) -> Tensor:
    """Training targets from API answers: probabilities (N,K) or labels (N,) int64;
    multi-label: per-finding probabilities or findings present (N, L) float32."""
    if multilabel:
        return (answers >= 0.5).float() if mode == "labels" else answers.float()
    if mode == "labels":
        return answers.argmax(dim=1) if answers.ndim == 2 else answers.long()
    if answers.ndim != 2:
        raise ValueError("mode='probs' needs an API that returns (N, K) probabilities")
    return answers.float()


def extract_model(victim_predict: VictimPredict, query_pool: Tensor, train_fn: TrainFn,
                  budgets: Sequence[int], test_images: Tensor, test_labels: Tensor,
                  mode: QueryMode = "probs", seed: int = 0) -> list[ExtractionResult]:
    """Train one copy per budget (ascending) with ``train_fn(queries, answers, seed)``.

    ``query_pool``: attacker images (M,C,H,W) in [0,1], no labels; budgets must be <= M.
    ``train_fn`` must accept soft targets in "probs" mode (``plain_train.make_train_fn`` does).
    In "labels" mode a probability API is reduced to its top-1 label (a label-only API).
    Multi-hot ``test_labels`` (N, L) make it multi-label: the API answers per finding
    (:func:`victim_api` with ``multilabel``), ``train_fn`` must train with BCE
    (``make_train_fn(..., multilabel=True)``), scores are per finding.
    """
    if mode not in ("probs", "labels"):
        raise ValueError(f"mode must be 'probs' or 'labels', got {mode!r}")
    budgets = sorted(int(b) for b in budgets)
    if not budgets or budgets[0] < 1 or budgets[-1] > len(query_pool):
        raise ValueError(f"budgets must lie in [1, {len(query_pool)}] (the query pool), "
                         f"got {budgets}")
    order = torch.randperm(len(query_pool), generator=torch.Generator().manual_seed(seed))
    queries = query_pool[order[: budgets[-1]]]
    multi = test_labels.ndim == 2
    answers = _as_targets(victim_predict(queries), mode, multi)  # the only attack queries
    victim_labels = _as_targets(victim_predict(test_images), "labels", multi)  # evaluation
    victim_acc = float((victim_labels == test_labels).float().mean())
    results = []
    for budget in budgets:
        copy = train_fn(queries[:budget], answers[:budget], seed)
        logits = predict_logits(copy, test_images)
        copy_labels = (logits >= 0).float() if multi else logits.argmax(dim=1)
        results.append(ExtractionResult(
            budget=budget, mode=mode,
            agreement=float((copy_labels == victim_labels).float().mean()),
            test_acc=float((copy_labels == test_labels).float().mean()),
            victim_test_acc=victim_acc,
        ))
    return results
