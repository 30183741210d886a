"""The disjoint data sets of a privacy audit, deduplicated by content hash.

The content hash is the validation stage's (SHA-1 of the uint8 image), so an image stored
twice counts once; PneumoniaMNIST shares images between its splits.

- ``members``: ``num_members`` images of the target's training split;
- ``nonmembers``: ``num_nonmembers`` held-out images the model never saw, neither in training
  nor in model selection (``nonmember_splits``, default val: they must come from the training
  split's distribution; test when val selected the model's epoch), whose content is not in the
  training split (an image in both is audited as neither);
- ``rmia_population``: ``num_population`` other held-out images (non-member leftovers first,
  then the other splits, e.g. test) as RMIA's ``z``;
- ``population``: the rest of the training split, without any audited image's content: the
  shadow pool, the reference models' top-up and the extraction query pool;
- ``test``: the test split (scores the extraction copies).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from medsec.data.types import ImageDataset, LoadedDataset
from medsec.errors import DataError
from medsec.privacy.config import AuditConfig
from medsec.training.config import ClassifierRecipe

MIN_SET = 4  # smallest member / non-member / population set an audit accepts


@dataclass(frozen=True)
class Examples:
    """Images float32 (N,C,H,W) in [0,1] and labels int64 (N,)."""

    images: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @classmethod
    def of(cls, split: ImageDataset, index: np.ndarray | None = None) -> Examples:
        images, labels = split.tensors()
        if index is not None:
            idx = torch.as_tensor(index, dtype=torch.long)
            images, labels = images[idx], labels[idx]
        return cls(images.contiguous(), labels.contiguous())


@dataclass(frozen=True)
class AuditData:
    """The disjoint sets of an audit (see the module docstring); ``train_size`` = the target's
    training-set size; ``counts`` = set sizes and removed duplicates (for the run record);
    ``nonmembers_from``: the split(s) of the non-members, and why when not the configured."""

    members: Examples
    nonmembers: Examples
    rmia_population: Examples
    population: Examples
    train: Examples
    test: Examples
    train_size: int
    counts: dict[str, float]
    nonmembers_from: str = "held-out"


def content_hashes(images: np.ndarray) -> np.ndarray:
    """Content hash per image (N,), the validation stage's (SHA-1 of the uint8 image)."""
    from medsec.data.validation import image_table

    table = image_table({"x": ImageDataset(images, np.zeros(len(images), np.int64))})
    return table["content_hash"].to_numpy()


def _unique_outside(hashes: np.ndarray, exclude: set[str]) -> np.ndarray:
    """Indices of the first occurrence of each hash not in ``exclude``."""
    seen: set[str] = set()
    keep = []
    for i, h in enumerate(hashes):
        if h not in exclude and h not in seen:
            seen.add(h)
            keep.append(i)
    return np.asarray(keep, dtype=np.int64)


def _sizes(available: int, wanted_a: int, wanted_b: int) -> tuple[int, int]:
    """Split ``available`` into two sets of at most the wanted sizes (pro rata when short)."""
    if wanted_a + wanted_b <= available:
        return wanted_a, wanted_b
    a = round(available * wanted_a / (wanted_a + wanted_b))
    return a, available - a


def audit_data(train: ImageDataset, heldout: ImageDataset, test: ImageDataset, audit: AuditConfig,
               seed: int, spare: ImageDataset | None = None) -> AuditData:
    """Draw the audit's disjoint sets (seeded) from the target's ``train`` split, ``heldout``
    images it never trained on from the same distribution (non-members; the leftovers go to
    RMIA's population), ``spare`` held-out images (RMIA's population only) and ``test``."""
    train_h, held_h = content_hashes(train.images), content_hashes(heldout.images)
    spare = spare if spare is not None else ImageDataset(heldout.images[:0], heldout.labels[:0])
    spare_h = content_hashes(spare.images) if len(spare) else np.asarray([], dtype=object)
    train_set = set(train_h)
    cross = train_set & (set(held_h) | set(spare_h))
    member_pool = _unique_outside(train_h, cross)
    held_pool = _unique_outside(held_h, train_set)
    spare_pool = _unique_outside(spare_h, train_set | set(held_h))
    rng = np.random.default_rng(seed)
    n_members = min(audit.num_members, len(member_pool))
    if len(spare_pool):
        n_non = min(audit.num_nonmembers, len(held_pool))
        n_pop = min(audit.num_population, len(held_pool) - n_non + len(spare_pool))
    else:
        n_non, n_pop = _sizes(len(held_pool), audit.num_nonmembers, audit.num_population)
    if min(n_members, n_non, n_pop) < MIN_SET:
        raise DataError(
            f"privacy audit: too few distinct images ({len(member_pool)} training, "
            f"{len(held_pool)} held-out outside the training split); need at least "
            f"{MIN_SET} members, non-members and population images"
        )
    members = rng.permutation(member_pool)[:n_members]
    held = rng.permutation(held_pool)
    nonmembers, spare_order = held[:n_non], rng.permutation(spare_pool)
    z_images = np.concatenate([heldout.images[held[n_non:]], spare.images[spare_order]])[:n_pop]
    z_labels = np.concatenate([heldout.labels[held[n_non:]], spare.labels[spare_order]])[:n_pop]
    audited = set(train_h[members]) | set(held_h[nonmembers])
    population = np.flatnonzero([h not in audited for h in train_h])
    counts = {
        "audit_num_members": float(n_members), "audit_num_nonmembers": float(n_non),
        "audit_num_rmia_population": float(n_pop), "audit_num_population": float(len(population)),
        "audit_duplicates_across_splits": float(len(cross)),
        "audit_duplicates_within_train": float(len(train_h) - len(train_set)),
    }
    return AuditData(
        members=Examples.of(train, members), nonmembers=Examples.of(heldout, nonmembers),
        rmia_population=Examples.of(ImageDataset(z_images, z_labels)),
        population=Examples.of(train, population),
        train=Examples.of(train), test=Examples.of(test), train_size=len(train), counts=counts,
    )


def audit_data_for(audit: AuditConfig, recipe: ClassifierRecipe, data: LoadedDataset,
                   selection: str | None = None) -> AuditData:
    """:func:`audit_data` for the target trained by ``recipe``: its training split
    (``max_train``), non-members from ``audit.nonmember_splits`` without any split that
    selected the model (val, unless ``selection`` is "last epoch"; None = unknown = selected on
    val), else from the unseen other split (test); RMIA's population also from the other unseen
    split; extraction scored on the test split (``max_eval``); seeded by ``recipe.seed``."""
    from medsec.training.job import LAST_EPOCH

    unseen = [s for s in ("val", "test") if s != "val" or selection == LAST_EPOCH]
    names = [s for s in audit.nonmember_splits if s in unseen] or unseen
    source = "+".join(names) if names == list(audit.nonmember_splits) else (
        f"{'+'.join(names)} (val selected the model's epoch: not a non-member set)")

    def joined(names: list[str]) -> ImageDataset | None:
        parts = [data.splits[name] for name in names]
        return ImageDataset(np.concatenate([p.images for p in parts]),
                            np.concatenate([p.labels for p in parts])) if parts else None

    heldout = joined(names)
    assert heldout is not None
    sets = audit_data(recipe.split(data, "train"), heldout, recipe.split(data, "test"), audit,
                      recipe.seed, spare=joined([s for s in unseen if s not in names]))
    return dataclasses.replace(sets, nonmembers_from=source)
