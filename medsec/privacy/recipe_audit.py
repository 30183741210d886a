"""Recipe audit: membership inference on a training RECIPE, with exchangeable members.

Protocol (``medsec.audit=recipe``):

1. The pool (:func:`build_pool`): the training and validation images, deduplicated by content
   hash (one copy of each image), optionally a seeded subset (``pool_size``); the test split
   stays untouched for utility.
2. The target is trained with the recipe on a seeded random half of the pool
   (:func:`half_mask`): members and non-members are exchangeable by construction.
3. ``K`` reference models (:func:`train_reference`, a pure function of ``(spec, pool, in_mask,
   seed)`` so a task runner can map it) are trained with the same recipe, each on a random
   half of the same pool; every pool image is in exactly ``K/2`` of them
   (:func:`reference_masks`). DP targets' references use the target's noise multiplier.
4. Every model is queried on the pool with augmented views (:func:`query_views`: identity,
   and the shifts / flips of training) and keeps LiRA's ``phi = log(p_y / (1 - p_y))`` per
   view: (N, A).
5. Attacks from those statistics (:func:`attack_scores`): ``loss`` (the target's own
   confidence on the plain view, a monotone function of -loss), ``lira_online``,
   ``lira_offline`` (Carlini et al. 2022: Gaussian fits per view, averaged over views) and
   ``rmia`` (Zarifzadeh et al. 2024; population z = the pool's non-members of the target).

Federated recipes (FedAvg / FedProx, with or without client DP): ``RecipeSpec.trainer`` is
the federated package's trainer (:class:`medsec.federated.recipe.FederatedTrainer`), so the
target and every reference are federations over the clients' shares of their pool half (per
site when the pool carries site keys); everything else (halves, references, attacks,
intervals) is this module's, unchanged. Membership is of the union of the clients' data.

With patient ids (``groups``), the target's and the references' halves are drawn per patient
(all images of a patient in or out) and a patient-level score (mean image score per patient)
is reported beside the image-level one.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from medsec.data.types import ImageDataset, LoadedDataset
from medsec.errors import ConfigError, DataError
from medsec.metrics.privacy import mia_summary
from medsec.privacy.config import DPConfig
from medsec.training.config import ClassifierRecipe

QueryAugment = Literal["none", "shift", "flip_shift"]
RECIPE_ATTACKS = ("loss", "lira_online", "lira_offline", "rmia")
SHIFT = 2  # the training augmentation's largest shift (medsec.training.module.random_shift)


# --------------------------------------------------------------------------- pool and halves


@dataclass(frozen=True)
class AuditPool:
    """The audit's pool: images float32 (N,C,H,W) in [0,1], labels int64 (N,) (multi-label:
    multi-hot float32 (N, L)); ``source``
    (N,) the split of each image (``train`` / ``val``) and ``index`` (N,) its index there;
    ``groups`` (N,) patient ids or None; ``sites`` (N,) site keys (one federated client per
    site) or None."""

    images: Tensor
    labels: Tensor
    source: np.ndarray
    index: np.ndarray
    groups: np.ndarray | None = None
    sites: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, mask: np.ndarray) -> ImageDataset:
        """The images where ``mask`` (N,) bool is True, as a split."""
        idx = torch.from_numpy(np.flatnonzero(mask))
        sites = None if self.sites is None else self.sites[idx.numpy()]
        return ImageDataset(self.images[idx].numpy(), self.labels[idx].numpy(), site_ids=sites)

    def members_record(self, mask: np.ndarray) -> dict[str, list[int]]:
        """``{split: sorted indices}`` of the images where ``mask`` is True (for the model's
        checkpoint: a later checkpoint audit needs them)."""
        return {str(s): sorted(int(i) for i in self.index[mask & (self.source == s)])
                for s in np.unique(self.source)}


def build_pool(splits: dict[str, ImageDataset], size: int | None, seed: int,
               groups: dict[str, np.ndarray] | None = None,
               sites: dict[str, np.ndarray] | None = None) -> AuditPool:
    """The pool from ``splits`` (e.g. train and val), one copy per content hash, then a seeded
    subset of ``size`` images (whole patients when ``groups`` gives ids per split); ``sites``:
    site keys per split (kept per pool image, for one federated client per site)."""
    from medsec.privacy.audit_sets import content_hashes

    parts, seen = [], set()
    for name, split in splits.items():
        hashes = content_hashes(split.images)
        for i, h in enumerate(hashes):
            if h not in seen:
                seen.add(h)
                parts.append((name, i))
    source = np.asarray([p[0] for p in parts])
    index = np.asarray([p[1] for p in parts], dtype=np.int64)
    gid = None
    if groups is not None:
        missing = [s for s in splits if s not in groups]
        if missing:
            raise DataError(f"patient ids: none for split(s) {missing}")
        # an image without a patient id ("" = unknown) is its own unit
        gid = np.asarray([str(groups[s][i]) or f"{s}#{i}" for s, i in parts])
    rng = np.random.default_rng(seed)
    order = np.arange(len(parts))
    if size is not None and size < len(parts):
        if gid is None:
            order = np.sort(rng.permutation(len(parts))[:size])
        else:  # whole patients until the size is reached
            keep, count = [], 0
            for g in rng.permutation(np.unique(gid)):
                if count >= size:
                    break
                keep.append(g)
                count += int((gid == g).sum())
            order = np.flatnonzero(np.isin(gid, keep))
    if len(order) < 8:
        raise DataError(f"privacy.audit.pool_size: only {len(order)} distinct images in the pool")
    images = np.concatenate([splits[source[j]].images[index[j]][None] for j in order])
    labels = np.asarray([splits[source[j]].labels[index[j]] for j in order])
    # int64 class labels (N,), or multi-hot float32 (N, L) for multi-label data
    labels = labels.astype(np.float32 if labels.ndim == 2 else np.int64)
    site = None
    if sites is not None:
        site = np.asarray([str(sites[source[j]][index[j]]) for j in order])
    return AuditPool(torch.from_numpy(images.astype(np.float32)), torch.from_numpy(labels),
                     source[order], index[order], None if gid is None else gid[order], site)


def _group_codes(groups: np.ndarray | None, n: int) -> tuple[np.ndarray, int]:
    """Integer code per example (N,) and the number of units (patients, or examples)."""
    if groups is None:
        return np.arange(n), n
    _, codes = np.unique(groups, return_inverse=True)
    return codes, int(codes.max()) + 1


def half_mask(n: int, seed: int, groups: np.ndarray | None = None) -> np.ndarray:
    """(N,) bool: a seeded random half of the units (examples, or patients: all their images
    in or out)."""
    codes, units = _group_codes(groups, n)
    chosen = np.zeros(units, dtype=bool)
    chosen[np.random.default_rng(seed).permutation(units)[: units // 2]] = True
    return chosen[codes]


def reference_masks(num_models: int, n: int, seed: int,
                    groups: np.ndarray | None = None) -> np.ndarray:
    """(K, N) bool: every unit (example or patient) in exactly K/2 of the K models."""
    from medsec.privacy.lira import balanced_in_mask

    codes, units = _group_codes(groups, n)
    return balanced_in_mask(num_models, units, seed)[:, codes]


# --------------------------------------------------------------------------- one model


@dataclass(frozen=True)
class RecipeSpec:
    """Everything one model of the audit needs (picklable): the classifier ``recipe`` (its
    ``select_best`` is forced off: the last epoch's weights, so no non-member selects an
    epoch), DP-SGD ``dp``, the dataset's ``name`` / ``num_classes`` / ``class_names`` /
    ``version``, the query views and the number of validation images watched per epoch
    (out-of-half pool images; monitoring only)."""

    recipe: ClassifierRecipe
    dp: DPConfig
    dataset: str
    num_classes: int
    class_names: tuple[str, ...]
    version: str = "pool"
    query_augment: QueryAugment = "shift"
    monitor: int = 64
    hooks: Any = None
    """Training hooks (``batch_transform``, ``loss_fn``: e.g. the defenses' PGD-AT / TRADES
    ``DefendedTraining``) or None for the plain recipe."""
    trainer: Any = None
    """Picklable ``(recipe, data) -> object with .model and .meta`` replacing the centralised
    fit (e.g. :class:`medsec.federated.recipe.FederatedTrainer`: a federation over the half),
    or None for the project's ``train_classifier`` with ``dp``."""

    def __post_init__(self) -> None:
        train = self.recipe.train.model_copy(update={"select_best": False})
        object.__setattr__(self, "recipe", self.recipe.model_copy(
            update={"train": train, "max_train": None, "max_eval": None}))


def mask_data(spec: RecipeSpec, pool: AuditPool, in_mask: np.ndarray) -> LoadedDataset:
    """The data set a model of ``spec`` trains on for the pool half ``in_mask`` (N,) bool:
    training split = the half, validation (and test) = the first ``spec.monitor`` images of
    the other half (of the half itself when the mask takes the whole pool)."""
    if in_mask.shape != (len(pool),) or not in_mask.any():
        raise ValueError(f"in_mask must be (N,)={len(pool)} bool with some True")
    train = pool.subset(in_mask)
    val = pool.subset(~in_mask)
    val = val.head(spec.monitor) if len(val) else train.head(spec.monitor)
    return LoadedDataset(name=spec.dataset, splits={"train": train, "val": val, "test": val},
                         num_classes=spec.num_classes, class_names=list(spec.class_names),
                         source_path="audit-pool", version=spec.version,
                         verification="audit pool")


def train_on_mask(spec: RecipeSpec, pool: AuditPool, in_mask: np.ndarray, seed: int) -> Any:
    """Train ``spec``'s recipe on the pool images of ``in_mask`` (N,) with ``seed``; returns
    the project's ``TrainedClassifier`` (model, meta, fit)."""
    from medsec.privacy.quiet import quiet_training
    from medsec.privacy.training import fit_strategy
    from medsec.training.job import train_classifier

    if in_mask.shape != (len(pool),) or not in_mask.any():
        raise ValueError(f"in_mask must be (N,)={len(pool)} bool with some True")
    if spec.hooks is not None and spec.trainer is not None:
        raise ValueError("a recipe spec has training hooks or its own trainer, not both")
    data = mask_data(spec, pool, in_mask)
    recipe = spec.recipe.model_copy(update={"seed": int(seed)})
    if spec.trainer is not None:
        with quiet_training():
            return spec.trainer(recipe, data)
    module = None
    if spec.hooks is not None:
        from medsec.training.job import build_module

        module = build_module(recipe, data)
        module.batch_transform = spec.hooks.batch_transform
        module.loss_fn = spec.hooks.loss_fn
    with quiet_training():
        return train_classifier(recipe, data, strategy=fit_strategy(spec.dp), module=module)


def query_views(images: Tensor, augment: QueryAugment) -> list[Tensor]:
    """The query views of ``images`` (N,C,H,W): identity, then with ``shift`` the four
    ``SHIFT``-pixel shifts of training's augmentation (edge padding), with ``flip_shift``
    also the horizontal flips of all of these."""
    views = [images]
    if augment in ("shift", "flip_shift"):
        padded = torch.nn.functional.pad(images, (SHIFT,) * 4, mode="replicate")
        h, w = images.shape[-2:]
        for dy, dx in ((0, SHIFT), (2 * SHIFT, SHIFT), (SHIFT, 0), (SHIFT, 2 * SHIFT)):
            views.append(padded[..., dy:dy + h, dx:dx + w].contiguous())
    if augment == "flip_shift":
        views += [torch.flip(v, dims=(-1,)) for v in list(views)]
    return views


def query_phi(model: nn.Module, images: Tensor, labels: Tensor,
              augment: QueryAugment) -> np.ndarray:
    """LiRA's ``phi`` of ``model`` on every view: (N, A) float64."""
    from medsec.privacy.membership import logit_confidence
    from medsec.training.predict import predict_logits

    return np.stack([logit_confidence(predict_logits(model, v), labels)
                     for v in query_views(images, augment)], axis=1)


def train_reference(spec: RecipeSpec, pool: AuditPool, in_mask: np.ndarray,
                    seed: int) -> np.ndarray:
    """ONE reference model: trained like the target on the pool images of ``in_mask`` (N,)
    with ``seed``, queried on the whole pool; returns phi (N, A) float64. Pure (depends on its
    arguments only) and picklable: a task runner may map it over ``(in_mask[k], seed_k)``."""
    trained = train_on_mask(spec, pool, in_mask, seed)
    return query_phi(trained.model, pool.images, pool.labels, spec.query_augment)


def reference_spec(spec: RecipeSpec, target_meta: dict[str, Any]) -> RecipeSpec:
    """``spec`` for the references of a target trained with it: a DP target's references use
    its noise multiplier and clipping (RDP accounting: their epsilon is never reported)."""
    record = target_meta.get("privacy") or {"mechanism": "none"}
    if record.get("mechanism") != "dp-sgd":
        return spec
    dp = DPConfig.model_validate(spec.dp.model_dump() | {
        "enabled": True, "noise_multiplier": record["noise_multiplier"], "target_epsilon": None,
        "delta": None, "max_grad_norm": record["max_grad_norm"], "accountant": "rdp"})
    return dataclasses.replace(spec, dp=dp)


# --------------------------------------------------------------------------- attacks


def _stats(values: np.ndarray, mask: np.ndarray, global_variance: bool
           ) -> tuple[np.ndarray, np.ndarray]:
    """Per-example, per-view mean and std of ``values`` (K,N,A) over models where ``mask``
    (K,N) is True: (N,A) each; a global variance pools examples (per view)."""
    m = mask[:, :, None].astype(np.float64)
    count = m.sum(axis=0)
    if (count == 0).any():
        raise ValueError("some example has no reference model on this side (in/out)")
    mean = (values * m).sum(axis=0) / count
    sq = ((values - mean) ** 2 * m)
    if global_variance:
        dof = np.maximum(count.sum(axis=0) - count.shape[0], 1)
        std = np.broadcast_to(np.sqrt(sq.sum(axis=(0, 1)) / dof), mean.shape)
    else:
        std = np.sqrt(sq.sum(axis=0) / np.maximum(count - 1, 1))
    return mean, np.maximum(std, 1e-6)


def lira_from_stats(target_phi: np.ndarray, ref_phi: np.ndarray, ref_in: np.ndarray,
                    online: bool = True, global_variance: bool | None = None) -> np.ndarray:
    """LiRA score (N,) from phi of the target (N,A) and of K references (K,N,A) with their
    membership (K,N): online = mean over views of log N(phi; in) - log N(phi; out); offline =
    mean over views of (phi - mu_out) / sd_out. ``global_variance`` None: True when K < 64."""
    if global_variance is None:
        global_variance = ref_phi.shape[0] < 64
    mu_out, sd_out = _stats(ref_phi, ~ref_in, global_variance)
    if not online:
        return ((target_phi - mu_out) / sd_out).mean(axis=1)
    mu_in, sd_in = _stats(ref_phi, ref_in, global_variance)

    def log_normal(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
        return -0.5 * ((target_phi - mean) / std) ** 2 - np.log(std)

    return (log_normal(mu_in, sd_in) - log_normal(mu_out, sd_out)).mean(axis=1)


def rmia_from_stats(target_phi: np.ndarray, ref_phi: np.ndarray, population: np.ndarray,
                    gamma: float = 2.0) -> np.ndarray:
    """RMIA score (N,): fraction of population examples z (``population``: (N,) bool) with
    ``[p(x|t)/p(x)] / [p(z|t)/p(z)] >= gamma``; p = true-class probability averaged over the
    views, p(.) = its mean over all references (online RMIA)."""
    if gamma <= 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    if not population.any():
        raise ValueError("RMIA needs population examples")

    def prob(phi: np.ndarray) -> np.ndarray:
        return (1.0 / (1.0 + np.exp(-phi))).mean(axis=-1)

    ratio = prob(target_phi) / np.maximum(prob(ref_phi).mean(axis=0), 1e-30)
    z = np.sort(ratio[population])
    # count of z with ratio_z <= ratio_x / gamma, vectorised
    score = np.searchsorted(z, ratio / gamma, side="right") / len(z)
    # With one population for all x the score is a non-decreasing function of ratio_x; a
    # weak target puts many x below the first z * gamma (score 0): break those ties by the
    # ratio itself (below 1 / |z|, so no order between different counts changes).
    rank = np.argsort(np.argsort(ratio, kind="stable"), kind="stable")
    return score + rank / (len(ratio) * len(z) * 2.0)


def attack_scores(target_phi: np.ndarray, ref_phi: np.ndarray, ref_in: np.ndarray,
                  target_in: np.ndarray, gamma: float = 2.0,
                  attacks: Sequence[str] = RECIPE_ATTACKS) -> dict[str, np.ndarray]:
    """Scores (N,) per attack of :data:`RECIPE_ATTACKS` (higher = member)."""
    out: dict[str, np.ndarray] = {}
    if "loss" in attacks:
        out["loss"] = target_phi[:, 0].copy()
    if "lira_online" in attacks:
        out["lira_online"] = lira_from_stats(target_phi, ref_phi, ref_in, online=True)
    if "lira_offline" in attacks:
        out["lira_offline"] = lira_from_stats(target_phi, ref_phi, ref_in, online=False)
    if "rmia" in attacks:
        out["rmia"] = rmia_from_stats(target_phi, ref_phi, ~target_in, gamma)
    return out


def patient_scores(scores: np.ndarray, groups: np.ndarray, member: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Mean image score per patient: (member patients' scores, non-member patients')."""
    codes, units = _group_codes(groups, len(scores))
    mean = np.bincount(codes, weights=scores, minlength=units) / np.bincount(codes,
                                                                               minlength=units)
    is_member = np.zeros(units, dtype=bool)
    is_member[codes[member]] = True
    return mean[is_member], mean[~is_member]


# --------------------------------------------------------------------------- the audit


ReferenceRunner = Callable[[RecipeSpec, AuditPool, list[np.ndarray], list[int]],
                           list[np.ndarray]]
"""``(spec, pool, in_masks, seeds) -> [phi (N,A)]``: how the K references are trained (the
default runs :func:`train_reference` one after the other; a flow may map it over workers)."""


def sequential_references(spec: RecipeSpec, pool: AuditPool, masks: list[np.ndarray],
                          seeds: list[int]) -> list[np.ndarray]:
    return [train_reference(spec, pool, m, s) for m, s in zip(masks, seeds, strict=True)]


@dataclass
class RecipeAuditResult:
    """``scores[attack] = (member scores, non-member scores)`` (image level); ``patient``:
    the same per patient (empty without groups); ``metrics``: ``mia_*`` of the ``declared``
    attack, ``mia_<attack>_*`` of each, ``mia_patient_*`` / ``mia_<attack>_patient_*`` with
    groups; ``null_reasons`` for metrics left None; ``target`` the trained target
    (``TrainedClassifier``), ``target_in`` its pool half (N,); timings in ``metrics``
    (``audit_reference_seconds``, ``audit_reference_cpu_seconds``)."""

    scores: dict[str, tuple[np.ndarray, np.ndarray]]
    patient: dict[str, tuple[np.ndarray, np.ndarray]]
    metrics: dict[str, float | None]
    null_reasons: dict[str, str]
    declared: str
    target: Any
    target_in: np.ndarray
    seconds: float
    notes: list[str] = field(default_factory=list)


def summarise(scores: dict[str, tuple[np.ndarray, np.ndarray]], declared: str,
              n_boot: int, seed: int, suffix: str = "") -> tuple[dict, dict]:
    """``mia_<attack><suffix>_*`` for every attack and ``mia<suffix>_*`` for ``declared``."""
    if declared not in scores:
        raise ValueError(f"declared attack {declared!r} not among {sorted(scores)}")
    metrics: dict[str, float | None] = {}
    reasons: dict[str, str] = {}
    for name, (members, nonmembers) in scores.items():
        s = mia_summary(members, nonmembers, prefix=f"mia_{name}{suffix}_", n_boot=n_boot,
                        seed=seed, warn=False)
        metrics |= s.metrics
        reasons |= s.null_reasons
        if name == declared:
            head = mia_summary(members, nonmembers, prefix=f"mia{suffix}_", n_boot=n_boot,
                               seed=seed)
            metrics |= head.metrics
            reasons |= head.null_reasons
    return metrics, reasons


def run_recipe_audit(spec: RecipeSpec, pool: AuditPool, num_reference: int, declared: str,
                     seed: int = 0, gamma: float = 2.0, n_boot: int = 1000,
                     runner: ReferenceRunner = sequential_references,
                     attacks: Sequence[str] = RECIPE_ATTACKS,
                     target: tuple[Any, np.ndarray] | None = None) -> RecipeAuditResult:
    """The recipe audit (module docstring) of ``spec`` on ``pool``: train the target on a
    seeded half (or audit ``target`` = (TrainedClassifier, its pool half (N,) bool)), train
    ``num_reference`` references with ``runner``, score every attack; ``declared`` (declared
    before running, from the config) is the headline."""
    start = time.perf_counter()
    if declared not in attacks:
        raise ConfigError(f"privacy.audit.declared_attack: {declared} is not run by this audit "
                          f"(attacks: {', '.join(attacks)})")
    if target is None:
        target_in = half_mask(len(pool), seed, pool.groups)
        trained = train_on_mask(spec, pool, target_in, seed)
    else:
        trained, target_in = target
    target_phi = query_phi(trained.model, pool.images, pool.labels, spec.query_augment)
    if not set(attacks) & {"lira_online", "lira_offline", "rmia"}:
        num_reference = 0  # the loss attack needs no reference model
    ref_spec = reference_spec(spec, trained.meta)
    masks = reference_masks(max(num_reference, 2), len(pool), seed + 1, pool.groups)
    seeds = [seed + 1000 + k for k in range(num_reference)]
    ref_start, ref_cpu = time.perf_counter(), time.process_time()
    ref_phi = np.stack(runner(ref_spec, pool, list(masks), seeds)) if num_reference else (
        np.zeros((0, *target_phi.shape)))
    ref_seconds, ref_cpu = time.perf_counter() - ref_start, time.process_time() - ref_cpu
    raw = attack_scores(target_phi, ref_phi, masks, target_in, gamma, attacks)
    scores = {name: (s[target_in], s[~target_in]) for name, s in raw.items()}
    metrics, reasons = summarise(scores, declared, n_boot, seed)
    patient: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if pool.groups is not None:
        patient = {name: patient_scores(s, pool.groups, target_in) for name, s in raw.items()}
        pm, pr = summarise(patient, declared, n_boot, seed, suffix="_patient")
        metrics |= pm
        reasons |= pr
    metrics |= {"mia_n_reference_models": float(num_reference), "audit_pool_size": float(
        len(pool)), "audit_reference_seconds": ref_seconds,
        "audit_reference_cpu_seconds": ref_cpu}
    return RecipeAuditResult(scores=scores, patient=patient, metrics=metrics,
                             null_reasons=reasons, declared=declared, target=trained,
                             target_in=target_in, seconds=time.perf_counter() - start)
