"""Split a labelled dataset across simulated hospitals: IID, label skew, Dirichlet non-IID.

Every scheme returns one sorted int64 index array per client; together they are disjoint and
cover ``range(N)`` exactly, every client gets at least one example, and the same seed gives
the same split.

- ``iid``: a seeded permutation cut into ``num_clients`` near-equal parts.
- ``label_skew``: each client sees only ``classes_per_client`` classes (assigned round robin
  from a seeded class order, so every class has an owner); a class's examples are split
  evenly among the clients that own it.
- ``dirichlet``: for every class, client shares are drawn from Dirichlet(alpha) (Hsu et al.
  2019); small alpha = strong skew, large alpha -> IID. Redrawn (seeded) until every client
  has at least one example.
- ``site``: one client per hospital of own data (the pseudonymous ``site`` keys of the
  training split, clients in sorted key order); needs exactly ``num_clients`` sites and at
  least :data:`MIN_SITE_EXAMPLES` examples per site (see :func:`site_indices`).

Multi-label data (multi-hot labels (N, L), several findings per image): ``iid`` and ``site``
split the N images as above; ``label_skew`` and ``dirichlet`` use one stratum per image in
place of its class, the index of its first finding present, ``L`` when it has none (the
stratum the patient-level splits and validation use,
:func:`medsec.data.validation.fingerprints.multi_hot_strata`), so ``classes_per_client``
counts strata (L + 1 of them).
"""

from __future__ import annotations

import numpy as np

from medsec.data.validation.fingerprints import multi_hot_strata
from medsec.errors import MedSecError
from medsec.federated.config import Partition

MAX_DIRICHLET_DRAWS = 100
MIN_SITE_EXAMPLES = 2  # a hospital needs a batch of >= 2 (batch norm in training mode)


class PartitionError(MedSecError, ValueError):
    """The data cannot be split as configured (the message names the field)."""


def partition_indices(
    labels: np.ndarray, num_clients: int, scheme: Partition = "iid", *, seed: int = 0,
    alpha: float = 0.5, classes_per_client: int = 1, sites: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Indices (sorted, int64) of each client's examples; ``labels`` int of shape (N,) or
    multi-hot (N, L) in {0, 1} (split by stratum, see the module docstring); ``sites`` str
    (N,): the site keys the ``site`` scheme needs."""
    labels = strata(labels)
    n = len(labels)
    if scheme == "site":
        return site_indices(sites, num_clients)
    if num_clients < 1:
        raise PartitionError(f"federated.num_clients must be >= 1, got {num_clients}")
    if num_clients > n:
        raise PartitionError(f"federated.num_clients={num_clients} is more than the {n} training "
                             "examples: every client needs at least one example")
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        parts = np.array_split(rng.permutation(n), num_clients)
    elif scheme == "label_skew":
        parts = _label_skew(labels, num_clients, classes_per_client, rng)
    elif scheme == "dirichlet":
        if not alpha > 0:
            raise PartitionError(f"federated.dirichlet_alpha must be > 0, got {alpha}")
        parts = _dirichlet(labels, num_clients, alpha, rng)
    else:
        raise PartitionError(f"federated.partition: unknown scheme {scheme!r}; known: iid, "
                             "label_skew, dirichlet")
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def strata(labels: np.ndarray) -> np.ndarray:
    """One int label per example: ``labels`` (N,) flattened, or for multi-hot labels (N, L)
    the index of the first finding present (``L``: none)."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] > 1:
        return multi_hot_strata(labels)
    return labels.reshape(-1)


def site_indices(sites: np.ndarray | None, num_clients: int,
                 min_examples: int = MIN_SITE_EXAMPLES) -> list[np.ndarray]:
    """One sorted int64 index array per distinct site key of ``sites`` (str (N,)), in sorted
    key order; PartitionError when there are no keys, an example has none (``""``), the
    number of sites is not ``num_clients`` or a site has fewer than ``min_examples``."""
    if sites is None or len(sites) == 0:
        raise PartitionError("federated.partition=site: the training split carries no site "
                             "keys (a manifest with a 'site' column gives them)")
    sites = np.asarray(sites).astype(str).reshape(-1)
    missing = int((sites == "").sum())
    if missing:
        raise PartitionError(f"federated.partition=site: {missing} training example(s) have no "
                             "site; fill the manifest's 'site' column for every row")
    keys, counts = np.unique(sites, return_counts=True)
    if len(keys) != num_clients:
        raise PartitionError(f"federated.num_clients={num_clients} but the training split has "
                             f"{len(keys)} sites (one client per site): set "
                             f"federated.num_clients={len(keys)}")
    if counts.min() < min_examples:
        k = int(counts.argmin())
        raise PartitionError(f"federated.partition=site: site {k} ({keys[k]}) has "
                             f"{int(counts[k])} training example(s), fewer than the "
                             f"{min_examples} a client needs")
    return [np.flatnonzero(sites == key).astype(np.int64) for key in keys]


def _label_skew(labels: np.ndarray, num_clients: int, classes_per_client: int,
                rng: np.random.Generator) -> list[np.ndarray]:
    classes = np.unique(labels)
    k = len(classes)
    if classes_per_client > k:
        raise PartitionError(f"federated.classes_per_client={classes_per_client} exceeds the {k} "
                             "classes present")
    if num_clients * classes_per_client < k:
        raise PartitionError(f"federated.classes_per_client={classes_per_client} x "
                             f"num_clients={num_clients} cannot cover all {k} classes")
    order = rng.permutation(classes)
    owners: dict[int, list[int]] = {int(c): [] for c in classes}
    for client in range(num_clients):
        for j in range(classes_per_client):
            owners[int(order[(client * classes_per_client + j) % k])].append(client)
    parts: list[list[int]] = [[] for _ in range(num_clients)]
    for cls, clients in owners.items():
        idx = rng.permutation(np.flatnonzero(labels == cls))
        if len(idx) < len(clients):
            raise PartitionError(f"federated.num_clients={num_clients}: class {cls} has "
                                 f"{len(idx)} examples for {len(clients)} clients that own it")
        for client, chunk in zip(clients, np.array_split(idx, len(clients)), strict=True):
            parts[client].extend(chunk.tolist())
    return [np.asarray(p) for p in parts]


def _dirichlet(labels: np.ndarray, num_clients: int, alpha: float,
               rng: np.random.Generator) -> list[np.ndarray]:
    classes = np.unique(labels)
    for _ in range(MAX_DIRICHLET_DRAWS):
        parts: list[list[int]] = [[] for _ in range(num_clients)]
        for cls in classes:
            idx = rng.permutation(np.flatnonzero(labels == cls))
            shares = rng.dirichlet(np.full(num_clients, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
            for client, chunk in enumerate(np.split(idx, cuts)):
                parts[client].extend(chunk.tolist())
        if min(len(p) for p in parts) > 0:
            return [np.asarray(p) for p in parts]
    raise PartitionError(f"federated.dirichlet_alpha={alpha}: {MAX_DIRICHLET_DRAWS} Dirichlet "
                         f"draws left a client of {num_clients} without data; use fewer clients "
                         "or a larger alpha")


def label_histogram(labels: np.ndarray, parts: list[np.ndarray], num_classes: int) -> np.ndarray:
    """Counts of shape (num_clients, num_classes); for multi-hot labels (N, L) each client's
    number of images with each finding (an image counts once per finding it has)."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] > 1:
        return np.stack([labels[p].sum(axis=0).astype(np.int64) for p in parts])
    labels = labels.reshape(-1)
    return np.stack([np.bincount(labels[p], minlength=num_classes) for p in parts])


def label_skew_score(labels: np.ndarray, parts: list[np.ndarray], num_classes: int) -> float:
    """Mean total-variation distance in [0, 1] between each client's label distribution and
    the global one (0 = identical, IID; 1 = disjoint); multi-hot labels (N, L): the
    distribution of the strata (first finding, or none: L + 1 values)."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] > 1:
        labels, num_classes = strata(labels), labels.shape[1] + 1
    hist = label_histogram(labels, parts, num_classes).astype(float)
    local = hist / hist.sum(axis=1, keepdims=True)
    overall = hist.sum(axis=0) / hist.sum()
    return float(0.5 * np.abs(local - overall).sum(axis=1).mean())
