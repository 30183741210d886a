"""Privacy audit of one trained classifier: membership inference, extraction, inversion.

The data sets come from :mod:`medsec.privacy.audit_sets`. Attacks (:func:`run_audit`, names as
in ``privacy.audit.attacks``): ``loss`` (Yeom), ``shadow`` (Shokri), ``lira`` (online and
offline), ``rmia``, ``extraction`` (per budget, probabilities and labels), ``inversion`` (class
representatives; skipped on multi-label data, recorded in ``AuditResult.skipped``; multi-label
scores: :mod:`medsec.privacy.membership`). Shadow and reference models are trained with the
target's own recipe (:func:`target_recipe`, :func:`recipe_train_fn`: the project's train path,
same network, optimiser, epochs and DP noise); every reference model sees as many images as the
target (its half of the audited images topped up from ``population``, as far as it goes).

Metrics (``medsec.audit=checkpoint``): ``mia_<attack>_*`` per attack
(:func:`medsec.metrics.privacy.mia_summary`: AUC with a bootstrap interval, TPR at 0.1 % / 1 %
FPR with Clopper-Pearson intervals, None with a reason when the non-members cannot resolve the
FPR) and the contract names ``mia_auc``, ``mia_auc_ci_low`` ... of the attack declared in
``privacy.audit.declared_attack`` (never the best of several); ``extraction_<mode>_*`` at the
largest budget; ``inversion_*``. ``notes`` says what the sample sizes can resolve.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from medsec.data.types import ImageDataset, LoadedDataset
from medsec.errors import ConfigError, DataError
from medsec.metrics.privacy import resolution_note
from medsec.privacy.audit_sets import MIN_SET, AuditData, Examples, audit_data_for
from medsec.privacy.config import AuditConfig, DPConfig
from medsec.privacy.plain_train import TrainFn
from medsec.privacy.quiet import quiet_training, resolution_warnings_once
from medsec.training.config import ClassifierRecipe

logger = logging.getLogger(__name__)
INVERSION_MULTILABEL = (
    "multi-label data: class-representative inversion maximises one class' softmax "
    "probability against the class-average images; an image has several findings, so there "
    "is no one class to invert or average (extraction and membership attacks still run)")

# --------------------------------------------------------------------------- training recipes


def target_recipe(recipe: ClassifierRecipe, dp: DPConfig, meta: dict[str, Any]
                  ) -> tuple[ClassifierRecipe, DPConfig]:
    """``recipe`` and ``dp`` with the audited model's recipe from its checkpoint ``meta``:
    network (``model.*``) and DP-SGD (same noise multiplier and clipping; delta 1/(10 N)). The
    references' epsilon is never reported, so they account with RDP, the cheapest (PRV takes
    about a second per epoch)."""
    model = recipe.model.model_copy(update={"name": meta["model_name"], "norm": meta["norm"],
                                            "dropout": meta["dropout"]})
    record = meta.get("privacy") or {"mechanism": "none"}
    if record.get("mechanism") == "dp-sgd":
        dp = DPConfig.model_validate(dp.model_dump() | {
            "enabled": True, "noise_multiplier": record["noise_multiplier"],
            "target_epsilon": None, "delta": None, "max_grad_norm": record["max_grad_norm"],
            "accountant": "rdp"})
    else:
        dp = dp.model_copy(update={"enabled": False})
    return recipe.model_copy(update={"model": model}), dp


def recipe_train_fn(recipe: ClassifierRecipe, dp: DPConfig, data: LoadedDataset) -> TrainFn:
    """A ``TrainFn`` that trains like the target: the project's train path with ``recipe``
    (DP-SGD with ``dp`` when enabled) on the given images/int labels (no ``max_train``
    truncation); ``seed`` replaces ``recipe.seed``; validation on ``data``'s val."""
    from medsec.privacy.training import fit_strategy
    from medsec.training.job import train_classifier

    strategy = fit_strategy(dp)

    def train_fn(images: Tensor, labels: Tensor, seed: int) -> nn.Module:
        split = ImageDataset(images.numpy(), labels.numpy())
        subset = dataclasses.replace(data, splits={**data.splits, "train": split})
        run = recipe.model_copy(update={"seed": int(seed), "max_train": None})
        with quiet_training():
            return train_classifier(run, subset, strategy=strategy).model

    return train_fn


def copy_train_fn(meta: dict[str, Any], audit: AuditConfig, query_images: Tensor,
                  multilabel: bool = False) -> TrainFn:
    """Extraction copies: the victim's architecture, normalised on the attacker's queries,
    trained by :func:`medsec.privacy.plain_train.train_plain` (accepts soft labels; BCE per
    finding with ``multilabel``)."""
    from medsec.models.factory import build_classifier
    from medsec.privacy.plain_train import make_train_fn
    from medsec.training.job import channel_stats

    mean, std = channel_stats(query_images.numpy())
    ex = audit.extraction

    def factory() -> nn.Module:
        return build_classifier(meta["model_name"], meta["in_channels"], meta["num_classes"],
                                tuple(meta["image_size"]), mean, std, norm=meta["norm"],
                                dropout=meta["dropout"])

    return make_train_fn(factory, epochs=ex.epochs, lr=ex.lr, batch_size=ex.batch_size,
                         multilabel=multilabel)


def _topped_up(train_fn: TrainFn, pool: Examples, size: int) -> TrainFn:
    """``train_fn`` on its examples plus a seeded sample of ``pool`` up to ``size`` images."""

    def train_fn_topped(images: Tensor, labels: Tensor, seed: int) -> nn.Module:
        need = min(size - len(labels), len(pool))
        if need > 0:
            pick = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:need]
            images = torch.cat([images, pool.images[pick]])
            labels = torch.cat([labels, pool.labels[pick]])
        return train_fn(images, labels, seed)

    return train_fn_topped


# --------------------------------------------------------------------------- the audit


@dataclass
class AuditResult:
    """``scores[attack] = (member scores, non-member scores)``; ``metrics`` scalars (None
    where unresolved, the reason in ``null_reasons``); ``declared`` the headline membership
    attack (None without one); per-mode extraction results; inversion results with the
    class-average images (K,C,H,W) they were scored against; ``nonmembers_from``: the
    non-members' split(s) (:class:`AuditData`); ``notes``: what the sample can resolve."""

    scores: dict[str, tuple[np.ndarray, np.ndarray]]
    metrics: dict[str, float | None]
    declared: str | None
    extraction: dict[str, list[Any]]
    inversion: list[Any]
    class_means: Tensor | None
    seconds: float
    nonmembers_from: str = "held-out"
    null_reasons: dict[str, str] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    """Configured attacks that do not apply to this data (name -> why), e.g. inversion on
    multi-label data; logged as ``medsec.<name>=skipped`` tags, never as numbers."""


def _membership_scores(model: nn.Module, data: AuditData, audit: AuditConfig,
                       train_fn: TrainFn, seed: int) -> dict[str, np.ndarray]:
    from medsec.privacy.lira import lira_scores, rmia_scores, train_reference_models
    from medsec.privacy.membership import ShadowModelAttack, loss_threshold_scores

    images = torch.cat([data.members.images, data.nonmembers.images])
    labels = torch.cat([data.members.labels, data.nonmembers.labels])
    scores: dict[str, np.ndarray] = {}
    if "loss" in audit.attacks:
        scores["loss"] = loss_threshold_scores(model, images, labels)
    if "shadow" in audit.attacks:
        if len(data.population) < MIN_SET:
            raise DataError(f"shadow attack: only {len(data.population)} population images")
        attack = ShadowModelAttack(train_fn, num_shadow=audit.num_shadow,
                                   features=audit.shadow_features, seed=seed)
        scores["shadow"] = attack.fit(data.population.images, data.population.labels).score(
            model, images, labels)
    if "lira" in audit.attacks or "rmia" in audit.attacks:
        refs = train_reference_models(
            images, labels, _topped_up(train_fn, data.population, data.train_size),
            num_models=audit.num_reference, seed=seed)
        if "lira" in audit.attacks:
            scores["lira_online"] = lira_scores(model, images, labels, refs, online=True)
            scores["lira_offline"] = lira_scores(model, images, labels, refs, online=False)
        if "rmia" in audit.attacks:
            scores["rmia"] = rmia_scores(model, images, labels, refs,
                                         data.rmia_population.images,
                                         data.rmia_population.labels, gamma=audit.rmia_gamma)
    return scores


def run_audit(model: nn.Module, meta: dict[str, Any], data: AuditData, audit: AuditConfig,
              train_fn: TrainFn, seed: int = 0) -> AuditResult:
    """Run the configured attacks on ``model`` (eval mode, never changed).

    ``meta``: the checkpoint metadata (architecture for extraction copies, ``num_classes``);
    ``train_fn``: the target's recipe for shadow/reference models (:func:`recipe_train_fn`).
    """
    start = time.perf_counter()
    model.eval()
    from medsec.privacy.recipe_audit import summarise

    metrics: dict[str, float | None] = dict(data.counts)
    n_members = len(data.members)
    scores = {name: (s[:n_members], s[n_members:])
              for name, s in _membership_scores(model, data, audit, train_fn, seed).items()}
    declared = audit.declared_attack if audit.declared_attack in scores else None
    reasons: dict[str, str] = {}
    notes: list[str] = []
    if declared is not None:
        with resolution_warnings_once():
            mia, reasons = summarise(scores, declared, audit.n_bootstrap, seed)
        metrics |= mia
        if "lira" in audit.attacks or "rmia" in audit.attacks:
            metrics["mia_n_reference_models"] = float(audit.num_reference)
        notes.append(resolution_note(len(data.nonmembers), n_members))
    extraction = _extraction(model, meta, data, audit, seed) if (
        "extraction" in audit.attacks) else {}
    for mode, results in extraction.items():
        last = results[-1]
        metrics |= {f"extraction_{mode}_agreement": last.agreement,
                    f"extraction_{mode}_test_acc": last.test_acc,
                    "extraction_victim_test_acc": last.victim_test_acc,
                    "extraction_max_budget": float(last.budget)}
    inversion, means = [], None
    skipped: dict[str, str] = {}
    if "inversion" in audit.attacks and data.train.labels.ndim == 2:
        skipped["inversion"] = INVERSION_MULTILABEL
        reasons["inversion"] = INVERSION_MULTILABEL
        notes.append(f"inversion skipped: {INVERSION_MULTILABEL}")
        logger.warning("privacy audit: inversion skipped: %s", INVERSION_MULTILABEL)
    elif "inversion" in audit.attacks:
        from medsec.privacy.inversion import (
            class_means,
            class_representative_inversion,
            inversion_metrics,
        )

        inv = audit.inversion
        num_classes = int(meta["num_classes"])
        inversion = class_representative_inversion(
            model, data.train.images, data.train.labels, num_classes, steps=inv.steps,
            lr=inv.lr, tv_weight=inv.tv_weight)
        means = class_means(data.train.images, data.train.labels, num_classes)
        metrics |= inversion_metrics(inversion)
    return AuditResult(scores=scores, metrics=metrics, declared=declared,
                       extraction=extraction, inversion=inversion, class_means=means,
                       seconds=time.perf_counter() - start, nonmembers_from=data.nonmembers_from,
                       null_reasons=reasons, notes=notes, skipped=skipped)


def _extraction(model: nn.Module, meta: dict[str, Any], data: AuditData, audit: AuditConfig,
                seed: int) -> dict[str, list[Any]]:
    from medsec.privacy.extraction import extract_model, victim_api

    pool = data.population.images
    budgets = audit.extraction.budgets
    if budgets[-1] > len(pool):
        raise ConfigError(
            f"privacy.audit.extraction.budgets: the largest budget {budgets[-1]} exceeds the "
            f"query pool of {len(pool)} images (training-split images outside the audit)"
        )
    multi = data.test.labels.ndim == 2
    train_fn = copy_train_fn(meta, audit, pool, multi)
    return {mode: extract_model(victim_api(model, mode, multi), pool, train_fn, budgets,
                                data.test.images, data.test.labels, mode=mode, seed=seed)
            for mode in audit.extraction.modes}


def audit_model(model: nn.Module, meta: dict[str, Any], audit: AuditConfig,
                recipe: ClassifierRecipe, dp: DPConfig, data: LoadedDataset,
                sets: AuditData | None = None) -> AuditResult:
    """Audit a trained classifier with ``audit``; ``recipe`` and ``dp`` are the configured
    training (split limits, seed, optimisation), shadow/reference models follow the model's own
    recipe (:func:`target_recipe` from ``meta``)."""
    sets = sets if sets is not None else audit_data_for(audit, recipe, data,
                                                        meta.get("selection"))
    train_fn = recipe_train_fn(*target_recipe(recipe, dp, meta), data)
    return run_audit(model, meta, sets, audit, train_fn, seed=recipe.seed)
