"""Config -> the federated stage: the federation (``federated`` section + the classifier
recipe), its centralised baseline, and the Flower deployment apps of ``federated_app/``
(``flwr run`` reads :data:`server_app` and :data:`client_app`), which load the MedSec config
named in the run config."""

from __future__ import annotations

import shlex
from functools import lru_cache
from typing import TYPE_CHECKING

from medsec.config import MedSecConfig, load_config
from medsec.data.registry import load_dataset
from medsec.data.types import LoadedDataset
from medsec.federated.apps import Deployment, deployment_apps
from medsec.federated.simulation import FederatedResult, run_federation
from medsec.privacy.gradient_inversion import InversionRow
from medsec.stages import classifier
from medsec.training.config import ClassifierRecipe
from medsec.training.job import evaluate_classifier, train_classifier

if TYPE_CHECKING:
    from medsec.privacy.canary_audit import CanaryAudit
    from medsec.privacy.recipe_audit import AuditPool, RecipeAuditResult, ReferenceRunner


def by_site(cfg: MedSecConfig, data: LoadedDataset) -> MedSecConfig:
    """``cfg`` with ``federated.partition=site`` when ``data``'s training split carries site
    keys (own data with a ``site`` column: one client per hospital, see
    :func:`medsec.federated.partition.site_indices`); unchanged otherwise."""
    sites = data.splits["train"].site_ids
    if sites is None or not len(sites) or not any(str(s) for s in sites):
        return cfg
    fed = cfg.federated.model_copy(update={"partition": "site"})
    return cfg.model_copy(update={"federated": fed})


def run(cfg: MedSecConfig, data: LoadedDataset) -> FederatedResult:
    """Federate ``cfg``'s classifier for ``federated.rounds`` rounds (one client per site when
    the training split carries site keys). Multi-label data (multi-hot labels) federates with
    BCE (see :mod:`medsec.federated.poisoning` and :mod:`medsec.federated.partition` for what
    poisoning and label-skewed partitions mean there); the gradient-inversion attack, which
    assumes one class per image, is refused before any work."""
    check_multilabel(cfg, data)
    return run_federation(by_site(cfg, data).federated, classifier.recipe(cfg), data)


def check_multilabel(cfg: MedSecConfig, data: LoadedDataset) -> None:
    """ConfigError naming ``federated.gradient_inversion.enabled`` when ``data`` is multi-label
    and the gradient-inversion attack is on: it inverts a cross-entropy gradient and recovers
    one class label per image (iDLG), neither of which a multi-hot target has; and
    ``federated.canary.kind`` when input canaries (one random class each) would run."""
    if data.task != "multilabel":
        return
    from medsec.errors import ConfigError

    fed = cfg.federated
    if fed.gradient_inversion.enabled:
        raise ConfigError(f"federated.gradient_inversion.enabled: {data.name} is multi-label "
                          f"({data.num_classes} findings per image); the gradient-inversion "
                          "attack needs one class per image: set it to false")
    audited = (fed.canary.enabled and fed.client_dp.enabled) or (
        fed.recipe_audit.enabled and fed.recipe_audit.canary)
    if audited and fed.canary.kind == "input":
        raise ConfigError(f"federated.canary.kind: {data.name} is multi-label; input canaries "
                          "carry one random class each: use kind=gradient")


def centralized_baseline(cfg: MedSecConfig, data: LoadedDataset) -> dict[str, float]:
    """The same model trained on all training data for ``rounds * local_epochs`` epochs
    (last epoch's weights, as the federation has no model selection)."""
    fed, base = cfg.federated, classifier.recipe(cfg)
    train = base.train.model_copy(update={"epochs": fed.rounds * fed.local_epochs,
                                          "select_best": False})
    base = base.model_copy(update={"train": train})
    trained = train_classifier(base, data, strategy=classifier.fit_strategy(cfg))
    ev = evaluate_classifier(trained.model, base.split(data, "test"), data.num_classes)
    out = {f"centralized_{k}": v for k, v in ev.metrics.items()
           if k in ("test_acc", "test_auc", "test_f1", "test_loss")}
    return out | {"centralized_epochs": float(train.epochs),
                  "centralized_seconds": trained.fit.seconds}


@lru_cache(maxsize=2)
def deployment(config: str, overrides: str) -> Deployment:
    """A deployment run's settings and data: the config file ``config`` with the dotted
    ``overrides`` (separated by spaces)."""
    cfg = load_config(config, overrides=shlex.split(overrides))
    data = load_dataset(cfg.dataset.name, cfg.dataset.data_dir)
    return Deployment(by_site(cfg, data).federated, classifier.recipe(cfg), data)


server_app, client_app = deployment_apps(deployment)


def gradient_inversion(cfg: MedSecConfig, data: LoadedDataset) -> list[InversionRow]:
    """The server's gradient-inversion attack (``federated.gradient_inversion``) on one client
    update of the federation's untrained, seeded initial model (the classifier recipe's
    network; at ``image_size`` when set), on the first training images of a seeded
    permutation; one row per setting and batch size (CKKS: not applicable). Single-label
    data only (:func:`check_multilabel`)."""
    check_multilabel(cfg, data)
    from medsec.models.factory import build_classifier
    from medsec.privacy.gradient_inversion import run_gradient_inversion
    from medsec.training.fit import seed_everything
    from medsec.training.job import channel_stats

    gi, recipe = cfg.federated.gradient_inversion, classifier.recipe(cfg)
    train = recipe.split(data, "train")
    size = gi.image_size or int(data.image_shape[-1])
    mean, std = channel_stats(train.images)
    seed_everything(recipe.seed)
    net = build_classifier(recipe.model.name, data.in_channels, data.num_classes, (size, size),
                           mean=mean, std=std, norm=recipe.model.norm,
                           dropout=recipe.model.dropout)
    need = max(gi.batch_sizes) * gi.secagg_clients
    images, labels = train.tensors()
    return run_gradient_inversion(net, images[: 4 * need], labels[: 4 * need], gi)


def canary_audit(cfg: MedSecConfig, data: LoadedDataset) -> CanaryAudit | None:
    """One-run DP audit of hospital 0's client DP (``federated.canary`` and
    ``federated.client_dp`` enabled; None otherwise): see
    :func:`medsec.federated.canary.audit_federation`."""
    from medsec.federated.canary import audit_federation

    return audit_federation(by_site(cfg, data).federated, classifier.recipe(cfg), data)


# --------------------------------------------------------------------------- recipe audit


def recipe_audit_points(cfg: MedSecConfig) -> list[tuple[str, MedSecConfig]]:
    """The federated recipes to audit (``federated.recipe_audit``; empty when disabled):
    ``(label, cfg)`` for the configured federation (label ``<strategy>``, or
    ``<strategy>-client-dp`` when client DP is on) and for it with client DP at each target
    epsilon of ``recipe_audit.client_dp_epsilons`` (``<strategy>-client-dp-eps<e>``)."""
    fed = cfg.federated
    if not fed.recipe_audit.enabled:
        return []
    points = [(fed.strategy + ("-client-dp" if fed.client_dp.enabled else ""), cfg)]
    for eps in fed.recipe_audit.client_dp_epsilons:
        dp = fed.client_dp.model_copy(update={"enabled": True, "target_epsilon": eps,
                                              "noise_multiplier": None})
        points.append((f"{fed.strategy}-client-dp-eps{eps:g}", cfg.model_copy(update={
            "federated": fed.model_copy(update={"client_dp": dp})})))
    return points


def recipe_audit(cfg: MedSecConfig, data: LoadedDataset, pool: AuditPool,
                 runner: ReferenceRunner | None = None) -> RecipeAuditResult:
    """Recipe audit (``medsec.audit=recipe``) of ``cfg``'s federation: the privacy stage's
    protocol and settings (``privacy.audit``: pool, ``num_reference``, declared attack,
    intervals) with the federation as the recipe
    (:class:`medsec.federated.recipe.FederatedTrainer`: the target and every reference are
    federations over the clients' shares of their pool half, one client per site when the
    data carries site keys; multi-label pools federate with BCE and are scored with the
    multi-label membership scores). ``metrics`` gain ``epsilon`` / ``delta`` (the weakest
    hospital's claim) under client DP and, with ``recipe_audit.canary``, the one-run canary
    audit of the same recipe (:func:`recipe_canary_audit`): ``epsilon_audit_lower`` beside
    them (also for the non-private recipe, which claims none), ``audit_num_canaries``,
    ``audit_num_guesses``, ``audit_correct_guesses``, ``canary_epsilon`` / ``canary_delta``
    (the audited round's claim); the target's meta gains ``canary_audit`` (its detail)."""
    import dataclasses

    from medsec.federated.recipe import FederatedTrainer
    from medsec.privacy.recipe_audit import mask_data, run_recipe_audit, sequential_references
    from medsec.stages import privacy

    check_multilabel(cfg, data)
    cfg = by_site(cfg, data)
    plain = cfg.model_copy(update={"privacy": cfg.privacy.model_copy(update={
        "dp": cfg.privacy.dp.model_copy(update={"enabled": False})})})
    spec = dataclasses.replace(privacy.recipe_spec(plain, data),
                               trainer=FederatedTrainer(cfg.federated))
    audit_cfg = cfg.privacy.audit
    result = run_recipe_audit(spec, pool, audit_cfg.num_reference, audit_cfg.declared_attack,
                              seed=cfg.seed, gamma=audit_cfg.rmia_gamma,
                              n_boot=audit_cfg.n_bootstrap,
                              runner=runner or sequential_references,
                              attacks=privacy._recipe_attacks(cfg))
    record = result.target.meta.get("privacy", {})
    if record.get("mechanism") == "federated-client-dp":
        result.metrics |= {"epsilon": record["epsilon"], "delta": record["delta"]}
    result.target.meta |= {"audit_members": pool.members_record(result.target_in),
                           "audit_pool_size": audit_cfg.pool_size, "audit_pool_seed": cfg.seed}
    if cfg.federated.recipe_audit.canary:
        target_data = mask_data(spec, pool, result.target_in)
        audit = recipe_canary_audit(cfg, spec.recipe.model_copy(update={"seed": cfg.seed}),
                                    target_data)
        result.metrics |= canary_metrics(audit)
        result.target.meta["canary_audit"] = audit.to_dict()
    return result


def recipe_canary_audit(cfg: MedSecConfig, recipe: ClassifierRecipe, data: LoadedDataset
                        ) -> CanaryAudit:
    """One-run DP audit of the federated recipe ``cfg`` trained by ``recipe`` on ``data``
    (the recipe audit's target half): hospital 0's first round as that federation runs it
    (same partition, N_k, sample rate, clipping and noise; plain without client DP) with
    ``federated.canary``'s canaries (:func:`medsec.federated.canary.audit_site`)."""
    from medsec.federated.canary import audit_site

    fed = by_site(cfg, data).federated
    return audit_site(fed, recipe, data, fed.canary)


def canary_metrics(audit: CanaryAudit) -> dict[str, float]:
    """A recipe canary audit's numbers for the recipe's child run: ``epsilon_audit_lower``,
    ``audit_*`` counts and the audited round's ``canary_epsilon`` (finite only) /
    ``canary_delta`` (the recipe's own ``epsilon`` / ``delta`` are its full-run claim)."""
    import math

    out = {k: v for k, v in audit.metrics().items() if k not in ("epsilon", "delta")}
    out["canary_delta"] = audit.delta
    if math.isfinite(audit.epsilon):
        out["canary_epsilon"] = audit.epsilon
    return out
