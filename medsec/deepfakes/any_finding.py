"""Multi-label data in the DeepFake stage: the binary "any finding" view.

The stage is class-conditional (conditional GAN, train-on-synthetic accuracy, tampering
"towards the other diagnosis", per-class grids). With several findings per image (multi-hot
labels (N, L)) there is no single class to condition on, so the stage runs on the binary
label "any finding present" (class 0 = ``no finding``, 1 = ``any finding``), and the victim is
queried through :class:`AnyFindingHead`: the exact probability of that label under its
per-finding sigmoids. The real-vs-fake detectors are label-agnostic and unchanged.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medsec.data.types import ImageDataset, LoadedDataset

ANY_FINDING_CLASSES = ["no finding", "any finding"]


class AnyFindingHead(nn.Module):
    """Wraps a multi-label classifier (images -> logits (N, L)) as a 2-class one: logits
    ``[log P(none), log P(any)]`` (N, 2) with ``P(none) = prod_l (1 - sigmoid(z_l))`` and
    ``P(any) = 1 - P(none)``, so the softmax of the output is exactly these probabilities.
    The wrapped network's layers stay reachable (penultimate features are the victim's)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        log_none = F.logsigmoid(-self.net(x)).sum(dim=1)  # log prod (1 - sigmoid z_l)
        log_any = torch.log(-torch.expm1(log_none.clamp(max=-1e-30)))
        return torch.stack([log_none, log_any], dim=1)


def any_finding_split(split: ImageDataset) -> ImageDataset:
    """``split`` with int64 labels (N,): 1 where any finding is present (multi-hot (N, L))."""
    labels = (np.asarray(split.labels) > 0.5).any(axis=1).astype(np.int64)
    return dataclasses.replace(split, labels=labels)


def any_finding_view(data: LoadedDataset, victim: nn.Module
                     ) -> tuple[LoadedDataset, nn.Module, bool]:
    """(data, victim, converted): for multi-label ``data`` the binary "any finding" data set
    (same version and splits) and the victim wrapped in :class:`AnyFindingHead`; single-label
    data and victim unchanged (``converted`` False)."""
    if data.task != "multilabel":
        return data, victim, False
    splits = {name: any_finding_split(split) for name, split in data.splits.items()}
    view = dataclasses.replace(data, splits=splits, num_classes=2,
                               class_names=list(ANY_FINDING_CLASSES))
    return view, AnyFindingHead(victim).eval(), True
