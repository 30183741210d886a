"""Simulate hospitals on one machine: partition the data, build the Flower apps, run them.

:func:`run_federation` is the entry point of the pipeline stage; it takes the ``federated``
section (:class:`FederatedConfig`) and the :class:`ClassifierRecipe` of the hospitals' network,
optimisation, seed and split limits. ``federated.runtime``:

- ``inprocess`` (default): the ``ServerApp`` drives :class:`~medsec.federated.grid.
  InProcessGrid`, which runs each hospital's ``ClientApp`` in this process, one after the
  other (see ``grid.py`` for why: Ray start-up dominates small federations on 2 cores);
- ``ray``: Flower's simulation engine (``flwr.simulation.run_simulation``, needs
  ``flwr[simulation]``), one Ray actor per CPU.

Both run the very same ``ServerApp``/``ClientApp`` as the deployment engine (``apps.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from flwr.app import Context, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

from medsec.data.types import ImageDataset, LoadedDataset
from medsec.errors import ConfigError
from medsec.federated import he
from medsec.federated.arrays import load_arrays, model_arrays
from medsec.federated.client import ClientSite, build_client_app
from medsec.federated.config import FederatedConfig
from medsec.federated.grid import InProcessGrid
from medsec.federated.local import LocalTraining
from medsec.federated.partition import label_histogram, label_skew_score, partition_indices
from medsec.federated.poisoning import backdoor_success_rate
from medsec.federated.server import (
    FederationOutcome,
    GlobalEvaluator,
    ServerPlan,
    build_server_app,
)
from medsec.federated.strategies import sampled_clients
from medsec.metrics.classification import classification_metrics
from medsec.models.factory import PixelSpaceClassifier, build_classifier
from medsec.training.config import ClassifierRecipe
from medsec.training.fit import seed_everything
from medsec.training.job import model_meta
from medsec.training.predict import predict_logits


@dataclass
class FederationSetup:
    """Hospitals (``sites``), the server's plan and how the data was split."""

    sites: list[ClientSite]
    plan: ServerPlan
    partition: dict[str, Any]


@dataclass
class FederatedResult:
    """Outcome of a federation, ready for tracking.

    ``history``: one dict per round (``round``, ``test_acc``, ``test_auc``, ``test_loss``,
    ``fed_val_acc``, ``train_loss`` (not under client DP), ``round_seconds``,
    ``upload_bytes_per_client``, ``download_bytes_per_client``, ``clients_ok``,
    ``clients_failed``, and where relevant ``backdoor_success_rate``, ``epsilon_client_max``,
    ``epsilon_central``).
    ``summary``: final numbers; ``clients``: per-hospital numbers of the last round.
    """

    model: PixelSpaceClassifier
    meta: dict[str, Any]
    history: list[dict[str, float]]
    summary: dict[str, float]
    partition: dict[str, Any]
    clients: list[dict[str, float]] = field(default_factory=list)


def net_builder(recipe: ClassifierRecipe, data: LoadedDataset
                ) -> Callable[[], PixelSpaceClassifier]:
    """A function building ``recipe.model`` (untrained) for ``data``'s image shape."""
    model = recipe.model

    def build() -> PixelSpaceClassifier:
        return build_classifier(model.name, data.in_channels, data.num_classes,
                                data.image_shape[1:], norm=model.norm, dropout=model.dropout)

    return build


def _val_parts(val: ImageDataset, train_parts: list[ImageDataset], fed: FederatedConfig,
               seed: int) -> list[ImageDataset]:
    """Each hospital's validation data: an IID share of ``val`` (its own training data when
    ``val`` has fewer examples than hospitals)."""
    if len(val) < fed.num_clients:
        return train_parts
    parts = partition_indices(val.labels, fed.num_clients, "iid", seed=seed + 1)
    return [ImageDataset(val.images[p], val.labels[p]) for p in parts]


def setup_federation(fed: FederatedConfig, recipe: ClassifierRecipe, data: LoadedDataset,
                     keys: he.HEKeys | None = None) -> FederationSetup:
    """Partition ``train`` across hospitals and build their sites and the server plan."""
    check_compatible(fed, recipe, data)
    seed, opt = recipe.seed, recipe.train
    train = recipe.split(data, "train")
    parts = partition_indices(train.labels, fed.num_clients, fed.partition, seed=seed,
                              alpha=fed.dirichlet_alpha,
                              classes_per_client=fed.classes_per_client, sites=train.site_ids)
    if fed.client_dp.enabled:
        check_client_delta(fed.client_dp.delta, [len(p) for p in parts])
    train_parts = [ImageDataset(train.images[p], train.labels[p]) for p in parts]
    val_parts = _val_parts(recipe.split(data, "val"), train_parts, fed, seed)
    if fed.secure_aggregation == "ckks" and keys is None:
        keys = he.generate_keys(fed.he.poly_modulus_degree, fed.he.scale_bits)
    build = net_builder(recipe, data)
    spec = LocalTraining(epochs=fed.local_epochs, batch_size=opt.batch_size, lr=opt.lr,
                         optimizer=opt.optimizer, weight_decay=opt.weight_decay,
                         augment=opt.augment, total_rounds=fed.rounds)
    roles = {c: fed.attack.kind for c in fed.attack.malicious_clients}
    sampled = sampled_clients(fed)
    sites = [
        ClientSite(partition_id=i, train=train_parts[i], val=val_parts[i],
                   num_classes=data.num_classes, build_net=build, training=spec, seed=seed,
                   role=roles.get(i, "honest"), attack=fed.attack, num_clients=fed.num_clients,
                   dp=fed.client_dp if fed.client_dp.enabled else None,
                   crash_round=fed.faults.crash_round if i in fed.faults.crash_clients else None,
                   he_secret=keys.secret if keys else None, he_slots=keys.slots if keys else 4096,
                   he_min_contributions=min(fed.min_fit_clients or sampled, sampled))
        for i in range(fed.num_clients)
    ]
    seed_everything(seed)
    initial = model_arrays(build())
    plan = ServerPlan(fed=fed, initial=initial, seed=seed,
                      evaluate=global_evaluator(fed, recipe, data),
                      he_public=keys.public if keys else None,
                      max_client_examples=max(len(p) for p in parts))
    partition = {"sizes": [len(p) for p in parts],
                 "label_histogram": label_histogram(train.labels, parts, data.num_classes).tolist(),
                 "label_skew": label_skew_score(train.labels, parts, data.num_classes),
                 "scheme": fed.partition}
    if fed.partition == "site":
        partition["num_sites"] = len(parts)
    return FederationSetup(sites=sites, plan=plan, partition=partition)


def check_client_delta(delta: float | None, sizes: list[int]) -> None:
    """ConfigError unless ``delta`` (None: 1/(10 N_k)) is below 1/N_k for every hospital k
    with ``sizes[k]`` training images (what each hospital's DP-SGD plan will resolve)."""
    from medsec.privacy.plan import resolve_delta

    for k, n in enumerate(sizes):
        try:
            resolve_delta(delta, n)
        except ValueError as exc:
            raise ConfigError(f"federated.client_dp.delta: hospital {k} has N={n} training "
                              f"images: {exc}") from None


def check_compatible(fed: FederatedConfig, recipe: ClassifierRecipe, data: LoadedDataset) -> None:
    """Cross-section checks the ``federated`` section cannot do alone (ConfigError)."""
    if (fed.client_dp.enabled or fed.central_dp.mode != "off") and recipe.model.norm == "batch":
        raise ConfigError("model.norm: differential privacy (federated.client_dp / "
                          "federated.central_dp) needs model.norm=group: BatchNorm mixes "
                          "examples and its running statistics cannot take DP noise")
    if fed.attack.kind == "backdoor" and fed.attack.backdoor_target >= data.num_classes:
        raise ConfigError(f"federated.attack.backdoor_target: {fed.attack.backdoor_target} is not "
                          f"a class of {data.name} ({data.num_classes} classes)")
    if fed.attack.trigger_size >= min(data.image_shape[1:]):
        raise ConfigError(f"federated.attack.trigger_size: {fed.attack.trigger_size} does not "
                          f"fit {data.image_shape[1:]} images")


def global_evaluator(fed: FederatedConfig, recipe: ClassifierRecipe, data: LoadedDataset
                     ) -> GlobalEvaluator:
    """Server-side evaluation of the global model on the held-out test split: ``test_acc``,
    ``test_auc``, ``test_f1``, ``test_loss`` (and the backdoor rates under a backdoor);
    multi-label data: macro accuracy / AUC / F1 over findings, mean BCE and
    ``test_exact_match`` (:func:`~medsec.metrics.classification.multilabel_metrics`)."""
    build = net_builder(recipe, data)
    test = recipe.split(data, "test")
    attack = fed.attack

    images, labels = test.tensors()

    def evaluate(server_round: int, arrays: dict[str, np.ndarray]) -> dict[str, float]:
        net = build()
        load_arrays(net, arrays, who="server")
        logits = predict_logits(net, images)
        finite = bool(torch.isfinite(logits).all())
        # A poisoned model can diverge (NaN/inf logits): score it as the chance-level model
        # it is (all logits 0) and flag it, instead of failing the whole run.
        metrics = classification_metrics(torch.nan_to_num(logits, 0.0, 0.0, 0.0), labels,
                                         data.num_classes, prefix="test_")
        out = {k: metrics[k] for k in ("test_acc", "test_auc", "test_f1", "test_loss",
                                       "test_exact_match") if k in metrics}
        out["global_model_finite"] = float(finite)
        if attack.kind == "backdoor":
            for key, triggered in (("backdoor_success_rate", True),
                                   ("backdoor_baseline_rate", False)):
                out[key] = backdoor_success_rate(net, test, attack.backdoor_target,
                                                 attack.trigger_size, triggered)
        return out

    return evaluate


def build_apps(setup: FederationSetup) -> tuple[ServerApp, ClientApp]:
    """The ``ServerApp`` and ``ClientApp`` of a prepared federation (SecAgg+ or message API);
    a hospital's site is chosen by ``node_config["partition-id"]``."""
    sites = setup.sites

    def site_of(context: Context) -> ClientSite:
        return sites[int(context.node_config["partition-id"])]

    if setup.plan.fed.secure_aggregation == "secaggplus":
        from medsec.federated.secagg import build_secagg_client_app, run_secagg_server

        return (build_server_app(lambda ctx: setup.plan, run_secagg_server),
                build_secagg_client_app(site_of))
    return build_server_app(lambda ctx: setup.plan), build_client_app(site_of)


def run_setup(setup: FederationSetup, runtime: str = "inprocess") -> FederationOutcome:
    """Run a prepared federation on ``runtime`` ("inprocess" or "ray")."""
    outcomes: list[FederationOutcome] = []
    setup.plan.on_finish = outcomes.append
    server_app, client_app = build_apps(setup)
    n = len(setup.sites)
    if runtime == "inprocess":
        grid = InProcessGrid(client_app, [{"partition-id": i, "num-partitions": n}
                                          for i in range(n)])
        server_app(grid, Context(run_id=1, node_id=0, node_config={}, state=RecordDict(),
                                 run_config={}))
    elif runtime == "ray":
        from flwr.simulation import run_simulation

        run_simulation(server_app=server_app, client_app=client_app, num_supernodes=n,
                       backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
    else:
        raise ValueError(f"federated.runtime: unknown runtime {runtime!r}")
    if not outcomes:
        raise RuntimeError("the federation ended without a result (see the Flower log above)")
    return outcomes[0]


def central_epsilon(fed: FederatedConfig, rounds: int) -> float:
    """User-level epsilon of Flower's central DP after ``rounds`` (RDP, no amplification)."""
    from medsec.privacy.accounting import epsilon_for

    delta = fed.central_dp.delta or 1.0 / (10 * fed.num_clients)
    return epsilon_for(fed.central_dp.noise_multiplier, 1.0, rounds, delta, "rdp")


def _history(fed: FederatedConfig, outcome: FederationOutcome) -> list[dict[str, float]]:
    rows = []
    for cost in outcome.rounds:
        clients = cost.clients
        weights = np.array([c.get("num-examples", 1.0) for c in clients], float)
        row = {"round": float(cost.round), "round_seconds": cost.seconds,
               "upload_bytes_per_client": cost.upload_bytes_per_client,
               "download_bytes_per_client": cost.download_bytes_per_client,
               "clients_ok": float(cost.succeeded),  # failed: an error or no reply
               "clients_failed": float(cost.sampled - cost.succeeded),
               **cost.fed_eval, **outcome.global_metrics.get(cost.round, {})}
        if clients and all("train_loss" in c for c in clients):  # DP hospitals send none
            row["train_loss"] = float(np.average([c["train_loss"] for c in clients],
                                                 weights=weights))
        eps = [c["epsilon"] for c in clients if math.isfinite(c.get("epsilon", np.nan))]
        if eps:
            row["epsilon_client_max"] = float(max(eps))
        if fed.central_dp.mode != "off":
            row["epsilon_central"] = central_epsilon(fed, cost.round)
        if fed.secure_aggregation == "ckks":
            row["he_aggregate_bytes"] = float(cost.extra_bytes)
            row["encrypt_seconds_mean"] = float(np.mean([c.get("encrypt_seconds", 0.0)
                                                         for c in clients]))
        rows.append(row)
    return rows


def run_federation(fed: FederatedConfig, recipe: ClassifierRecipe, data: LoadedDataset
                   ) -> FederatedResult:
    """Partition, federate for ``fed.rounds`` rounds, return the global model + numbers."""
    if recipe.train.num_threads:
        torch.set_num_threads(recipe.train.num_threads)
    setup = setup_federation(fed, recipe, data)
    return federation_result(fed, recipe, data, setup, run_setup(setup, fed.runtime))


def federation_result(fed: FederatedConfig, recipe: ClassifierRecipe, data: LoadedDataset,
                      setup: FederationSetup, outcome: FederationOutcome) -> FederatedResult:
    """The global model and the numbers of a finished federation (simulated or deployed)."""
    model = net_builder(recipe, data)()
    load_arrays(model, outcome.arrays, who="server")
    model.eval()
    history = _history(fed, outcome)
    last = dict(history[-1]) if history else {}
    summary = {k: v for k, v in last.items() if k != "round"}
    summary |= {
        "rounds": float(fed.rounds), "federation_seconds": outcome.seconds,
        "mean_round_seconds": float(np.mean([h["round_seconds"] for h in history])),
        "label_skew": float(setup.partition["label_skew"]),
        "initial_test_acc": outcome.global_metrics.get(0, {}).get("test_acc", np.nan),
    }
    if "num_sites" in setup.partition:  # one hospital per site of own data
        summary["num_sites"] = float(setup.partition["num_sites"])
    meta = model_meta(recipe, data) | {"federated": True, "rounds": fed.rounds}
    clients = outcome.rounds[-1].clients if outcome.rounds else []
    return FederatedResult(model=model, meta=meta, history=history, summary=summary,
                           partition=setup.partition, clients=clients)
