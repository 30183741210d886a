"""Config -> privacy: the privacy-utility sweep's configs, the audit's data sets and the audit.

Sweep points: the non-private baseline (``privacy.sweep_baseline``) and DP-SGD at each target
epsilon of ``privacy.sweep``. Every point uses the same seed, data, training settings (with
``privacy.epochs`` replacing ``train.epochs`` when set) and network, built with GroupNorm
(``model.norm=group``: DP-compatible, so the baseline differs from the DP models only by
DP-SGD and its normalisation: the training split's statistics, where DP models use fixed ones,
mean 0.5 and std 0.5). Model selection is the same for all points: the best validation epoch
only with ``train.select_best`` AND ``privacy.dp.val_is_public``, else the last epoch.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from medsec.config import MedSecConfig, config_from_dict, config_to_dict
from medsec.data.types import LoadedDataset
from medsec.errors import DataError
from medsec.privacy.sweep import privacy_label
from medsec.stages import classifier

if TYPE_CHECKING:  # the audit imports sklearn/Opacus: only when it runs
    from torch import nn

    from medsec.privacy.audit import AuditResult
    from medsec.privacy.audit_sets import AuditData
    from medsec.privacy.canary_audit import CanaryAudit
    from medsec.privacy.config import AdversarialRecipe
    from medsec.privacy.recipe_audit import (
        AuditPool,
        RecipeAuditResult,
        RecipeSpec,
        ReferenceRunner,
    )


@dataclass(frozen=True)
class SweepPoint:
    """``label``: the ``medsec.privacy`` tag (``none``, ``dp-eps8``); ``cfg``: its config."""

    label: str
    target_epsilon: float | None
    cfg: MedSecConfig
    adversarial: AdversarialRecipe | None = None


def sweep_points(cfg: MedSecConfig) -> list[SweepPoint]:
    """The configs of the sweep, baseline first, then ascending target epsilon, then the
    adversarially trained recipes (``privacy.adversarial``: non-private, label e.g.
    ``pgd-at-eps8of255``)."""
    base = config_to_dict(cfg)
    base["model"]["norm"] = "group"
    base["train"]["select_best"] = _sweep_selects_on_val(cfg)
    base["train"]["epochs"] = cfg.privacy.epochs or cfg.train.epochs
    targets: list[float | None] = [None] if cfg.privacy.sweep_baseline else []
    targets += list(cfg.privacy.sweep)
    points = []
    for target in targets:
        data = copy.deepcopy(base)
        dp = data["privacy"]["dp"]
        if target is None:
            dp["enabled"] = False
        else:
            dp |= {"enabled": True, "target_epsilon": target, "noise_multiplier": None}
        label = privacy_label(target)
        points.append(SweepPoint(label, target,
                                 config_from_dict(data, source=f"privacy sweep point {label}")))
    plain = next((p.cfg for p in points if p.target_epsilon is None), None)
    if plain is None and cfg.privacy.adversarial:
        data = copy.deepcopy(base)
        data["privacy"]["dp"]["enabled"] = False
        plain = config_from_dict(data, source="privacy sweep (adversarial points)")
    for adv in cfg.privacy.adversarial:
        label = f"{adv.kind.replace('_', '-')}-eps{adv.eps * 255:.3g}of255"
        points.append(SweepPoint(label, None, plain, adv))  # type: ignore[arg-type]
    return points


def _sweep_selects_on_val(cfg: MedSecConfig) -> bool:
    return cfg.train.select_best and cfg.privacy.dp.val_is_public


def audit_sets(cfg: MedSecConfig, data: LoadedDataset,
               meta: dict[str, Any] | None = None) -> AuditData:
    """The audit's disjoint data sets (``privacy.audit``) for the checkpoint of ``meta`` (its
    ``selection``: non-members never include the split that selected it), or with ``meta``
    None for the sweep's models."""
    from medsec.privacy.audit_sets import audit_data_for
    from medsec.training.job import BEST_VAL, LAST_EPOCH

    selection = meta.get("selection") if meta is not None else (
        BEST_VAL if _sweep_selects_on_val(cfg) else LAST_EPOCH)
    return audit_data_for(cfg.privacy.audit, classifier.recipe(cfg), data, selection)


def audit(cfg: MedSecConfig, model: nn.Module, meta: dict[str, Any], data: LoadedDataset,
          sets: AuditData | None = None) -> AuditResult:
    """Audit ``model`` (checkpoint ``meta``) with ``privacy.audit``; shadow/reference models
    train like ``cfg`` with the model's own network and DP noise."""
    from medsec.privacy.audit import audit_model

    return audit_model(model, meta, cfg.privacy.audit, classifier.recipe(cfg), cfg.privacy.dp,
                       data, sets)


# --------------------------------------------------------------------------- recipe audit


def _groups(split: Any) -> Any:
    """Patient ids (N,) of a split when the prepared data carries them, else None."""
    for name in ("patient_ids", "groups"):
        value = getattr(split, name, None)
        if value is not None:
            return value
    return None


def audit_pool(cfg: MedSecConfig, data: LoadedDataset) -> AuditPool:
    """The recipe audit's pool: training (``dataset.max_train``) and validation images,
    deduplicated, ``privacy.audit.pool_size`` of them (seeded by ``seed``); per patient when
    both splits carry patient ids; with their site keys when both carry them (the federated
    recipe audit's clients). The test split is not in it."""
    from medsec.privacy.recipe_audit import build_pool

    splits = {"train": classifier.split(cfg, data, "train"), "val": data.splits["val"]}
    groups = {name: _groups(split) for name, split in splits.items()}
    known = None if any(g is None for g in groups.values()) else groups
    sites = {name: split.site_ids for name, split in splits.items()}
    sites_known = None if any(s is None for s in sites.values()) else sites
    return build_pool(splits, cfg.privacy.audit.pool_size, cfg.seed, known, sites_known)


def adversarial_hooks(adv: AdversarialRecipe, seed: int) -> Any:
    """The defenses' training hooks of a PGD-AT / TRADES recipe (step ``eps / 4``)."""
    from medsec.defenses.training import AdversarialBatches, DefendedTraining, TradesLoss

    if adv.kind == "pgd_at":
        return DefendedTraining(batch_transform=AdversarialBatches(adv.eps, adv.eps / 4,
                                                                   adv.steps, seed))
    return DefendedTraining(loss_fn=TradesLoss(adv.eps, adv.eps / 4, adv.steps, adv.beta, seed))


def recipe_spec(cfg: MedSecConfig, data: LoadedDataset,
                adversarial: AdversarialRecipe | None = None) -> RecipeSpec:
    """The training recipe of ``cfg`` (a sweep point; with ``adversarial``: its PGD-AT /
    TRADES hooks) as the audit's picklable spec."""
    from medsec.privacy.recipe_audit import RecipeSpec

    hooks = None if adversarial is None else adversarial_hooks(adversarial, cfg.seed)
    return RecipeSpec(recipe=classifier.recipe(cfg), dp=cfg.privacy.dp, dataset=data.name,
                      num_classes=data.num_classes, class_names=tuple(data.class_names),
                      version=data.version, query_augment=cfg.privacy.audit.query_augment,
                      hooks=hooks)


def _recipe_attacks(cfg: MedSecConfig) -> list[str]:
    """The recipe audit's membership attacks of ``privacy.audit.attacks`` (``lira`` = online
    and offline; ``shadow`` runs in the checkpoint audit only)."""
    chosen = cfg.privacy.audit.attacks
    return [a for a in ("loss", "lira_online", "lira_offline", "rmia")
            if a in chosen or (a.startswith("lira") and "lira" in chosen)]


def recipe_audit(cfg: MedSecConfig, data: LoadedDataset, pool: AuditPool,
                 runner: ReferenceRunner | None = None,
                 adversarial: AdversarialRecipe | None = None) -> RecipeAuditResult:
    """Recipe audit of the sweep point ``cfg`` (``medsec.audit=recipe``); ``runner`` trains
    the references (default: one after the other). The target's checkpoint meta records its
    pool members (``audit_members``: split -> indices)."""
    from medsec.privacy.recipe_audit import run_recipe_audit, sequential_references

    audit_cfg = cfg.privacy.audit
    result = run_recipe_audit(recipe_spec(cfg, data, adversarial), pool, audit_cfg.num_reference,
                              audit_cfg.declared_attack, seed=cfg.seed,
                              gamma=audit_cfg.rmia_gamma, n_boot=audit_cfg.n_bootstrap,
                              runner=runner or sequential_references,
                              attacks=_recipe_attacks(cfg))
    result.target.meta |= {"audit_members": pool.members_record(result.target_in),
                           "audit_pool_size": audit_cfg.pool_size, "audit_pool_seed": cfg.seed}
    return result


def recipe_side_attacks(cfg: MedSecConfig, data: LoadedDataset, pool: AuditPool,
                        result: RecipeAuditResult) -> AuditResult | None:
    """Extraction and inversion (when in ``privacy.audit.attacks``) of the recipe audit's
    target: query pool = the pool's non-members, copies scored on the test split."""
    from medsec.privacy.audit import run_audit
    from medsec.privacy.audit_sets import AuditData, Examples

    side = tuple(a for a in cfg.privacy.audit.attacks if a in ("extraction", "inversion"))
    if not side:
        return None
    audit_cfg = cfg.privacy.audit.model_copy(update={"attacks": side})
    members = Examples.of(pool.subset(result.target_in))
    others = Examples.of(pool.subset(~result.target_in))
    sets = AuditData(members=members, nonmembers=others, rmia_population=others,
                     population=others, train=members,
                     test=Examples.of(classifier.split(cfg, data, "test")),
                     train_size=len(members), counts={}, nonmembers_from="pool")
    return run_audit(result.target.model, result.target.meta, sets, audit_cfg,
                     lambda *a: None, seed=cfg.seed)  # type: ignore[arg-type, return-value]


def checkpoint_pool_target(cfg: MedSecConfig, data: LoadedDataset, meta: dict[str, Any]
                           ) -> tuple[AuditPool, Any] | None:
    """For a checkpoint trained by the recipe audit (its meta has ``audit_members``): the
    pool rebuilt as then and its members mask (N,) bool; None for other checkpoints."""
    import numpy as np

    record = meta.get("audit_members")
    if not record:
        return None
    update = {"pool_size": meta.get("audit_pool_size")}
    audit_cfg = cfg.privacy.audit.model_copy(update=update)
    pool = audit_pool(cfg.model_copy(update={
        "seed": meta.get("audit_pool_seed", cfg.seed),
        "privacy": cfg.privacy.model_copy(update={"audit": audit_cfg})}), data)
    members = {(split, int(i)) for split, idx in record.items() for i in idx}
    mask = np.asarray([(str(s), int(i)) in members for s, i in zip(pool.source, pool.index,
                                                                   strict=True)])
    if mask.sum() != sum(len(v) for v in record.values()):
        raise DataError("checkpoint audit_members: the pool rebuilt from the data does not "
                        "contain all recorded members (different data or dataset.max_train)")
    return pool, mask


def checkpoint_recipe_audit(cfg: MedSecConfig, data: LoadedDataset, model: nn.Module,
                            meta: dict[str, Any], pool: AuditPool, members: Any,
                            runner: ReferenceRunner | None = None) -> RecipeAuditResult:
    """Checkpoint audit with the recipe protocol: ``model`` trained on the pool images of
    ``members``; references trained with the checkpoint's recipe on halves of the pool."""
    from types import SimpleNamespace

    from medsec.privacy.audit import target_recipe
    from medsec.privacy.recipe_audit import RecipeSpec, run_recipe_audit, sequential_references

    recipe, dp = target_recipe(classifier.recipe(cfg), cfg.privacy.dp, meta)
    spec = RecipeSpec(recipe=recipe, dp=dp, dataset=data.name, num_classes=data.num_classes,
                      class_names=tuple(data.class_names), version=data.version,
                      query_augment=cfg.privacy.audit.query_augment)
    audit_cfg = cfg.privacy.audit
    target = (SimpleNamespace(model=model, meta=meta), members)
    return run_recipe_audit(spec, pool, audit_cfg.num_reference, audit_cfg.declared_attack,
                            seed=cfg.seed, gamma=audit_cfg.rmia_gamma,
                            n_boot=audit_cfg.n_bootstrap,
                            runner=runner or sequential_references,
                            attacks=_recipe_attacks(cfg), target=target)


def canary_audit(cfg: MedSecConfig, data: LoadedDataset) -> CanaryAudit | None:
    """One-run DP audit (``privacy.canary``, None when disabled) of ``cfg``'s classifier
    recipe: one extra training run, with its DP settings when ``privacy.dp.enabled`` (a sweep
    point's config), ``privacy.canary.num_canaries`` canaries of ``privacy.canary.kind``
    (gradient canaries in the network, or input canaries in the training data)."""
    canary = cfg.privacy.canary
    if not canary.enabled:
        return None
    from medsec.privacy.canary_audit import audit_classifier_run

    recipe = classifier.recipe(cfg)
    if canary.epochs is not None:
        recipe = recipe.derive(epochs=canary.epochs)
    dp = cfg.privacy.dp if cfg.privacy.dp.enabled else None
    return audit_classifier_run(recipe, data, dp, canary.num_canaries, canary.guesses,
                                canary.confidence, canary.seed, canary.kind)
