"""Judging a generator against real data: quality, memorisation, membership, utility.

- quality: Frechet distance and k-NN precision/recall in the feature space of the project's
  in-domain classifier (:mod:`medsec.deepfakes.features`) against real held-out images;
- memorisation: nearest-training-image distances of fakes vs held-out real images;
- membership inference against the generator: members (training images) vs non-members
  (held-out) scored by the distance to their nearest synthetic image;
- utility: train-on-synthetic / test-on-real (TSTR) accuracy and AUC.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from medsec.data.types import ImageDataset
from medsec.deepfakes.classify import fit_on
from medsec.deepfakes.features import penultimate_features
from medsec.deepfakes.networks import ConditionalGenerator
from medsec.deepfakes.sampling import sample_images
from medsec.metrics.generative import (
    frechet_distance,
    knn_precision_recall,
    memorisation_metrics,
    synthetic_membership_scores,
)
from medsec.metrics.privacy import mia_metrics
from medsec.training.config import ClassifierRecipe
from medsec.training.job import evaluate_classifier


@dataclass
class RealReference:
    """Real images a generator is judged against (all float32 [0, 1], (N, C, H, W)).

    ``train``: the generator's training images (members); ``holdout``: real images it never
    saw (non-members and the quality reference); ``test``: the TSTR test split;
    ``feature_net``: the in-domain classifier whose penultimate layer gives the features.
    """

    train: ImageDataset
    holdout: ImageDataset
    test: ImageDataset
    class_names: list[str]
    feature_net: nn.Module

    def features(self, images: Tensor) -> Tensor:
        return penultimate_features(self.feature_net, images)


def fakes_like(generator: ConditionalGenerator, reference: ImageDataset, seed: int) -> Tensor:
    """One fake per reference image, with the same label (same class balance)."""
    return sample_images(generator, torch.from_numpy(reference.labels), seed)


def real_baseline(ref: RealReference) -> dict[str, float]:
    """The same quality metrics for real training images vs the real holdout (a floor)."""
    train = torch.from_numpy(ref.train.head(len(ref.holdout)).images)
    hold = torch.from_numpy(ref.holdout.images)
    return {"fd_real_baseline": frechet_distance(ref.features(train), ref.features(hold))}


def quality_metrics(fakes: Tensor, ref: RealReference, k: int = 3,
                    prefix: str = "") -> dict[str, float]:
    """``fd_classifier``, ``precision``, ``recall`` (k-NN), memorisation and ``gen_mia_*``
    metrics of fakes (N, C, H, W) against the reference (names get ``prefix``)."""
    hold = torch.from_numpy(ref.holdout.images)
    real_f, fake_f = ref.features(hold), ref.features(fakes)
    out = {"fd_classifier": frechet_distance(real_f, fake_f)}
    pr = knn_precision_recall(real_f, fake_f, k=min(k, len(fakes) - 1, len(hold) - 1))
    out |= {"precision_knn": pr["precision"], "recall_knn": pr["recall"]}
    train = torch.from_numpy(ref.train.images)
    out |= memorisation_metrics(fakes, train, hold)
    members = train[: len(hold)]
    out |= mia_metrics(*synthetic_membership_scores(members, hold, fakes), prefix="gen_mia_")
    return {f"{prefix}{key}": value for key, value in out.items()}


def tstr_metrics(
    recipe: ClassifierRecipe, fake_train: ImageDataset, fake_val: ImageDataset,
    ref: RealReference, epochs: int | None, seed: int, prefix: str = "tstr_",
) -> dict[str, float]:
    """Train ``recipe``'s classifier on synthetic images only (selected on synthetic val),
    test on the real test split: ``{prefix}acc``, ``auc``, ``f1``, ``loss``, recalls."""
    model = fit_on(recipe, fake_train, fake_val, ref.class_names, "synthetic", epochs, seed)
    return evaluate_classifier(model, ref.test, len(ref.class_names), prefix=prefix).metrics
