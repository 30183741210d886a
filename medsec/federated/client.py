"""The Flower ``ClientApp`` of a hospital: local training, evaluation, checked CKKS decryption.

The app is built around a *site provider*: a function from Flower's ``Context`` (which holds
``node_config["partition-id"]``) to a :class:`ClientSite` with that hospital's data, model
builder, training settings and role (honest / label flipping / backdoor). The same app runs
in-process, under Flower's Ray simulation and as a SuperNode process (``apps.py``).

Message contract (``train``): in ``content["arrays"]`` the global weights and in
``content["config"]`` ``server-round`` (and ``proximal-mu`` for FedProx); out
``content["arrays"]`` (or ``content["he"]`` ``ciphertext`` + ``tag`` with CKKS, for the
decrypting node the server names in ``he-decryptor``) and
``content["metrics"]`` with ``num-examples``, ``unit-weight``, ``partition-id``,
``train_loss`` (omitted under client DP), ``train_seconds``, ``epsilon`` (client DP),
``encrypt_seconds``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from torch import nn

from medsec.data.types import ImageDataset
from medsec.federated import he, poisoning
from medsec.federated.arrays import flatten, from_record, load_arrays, to_record
from medsec.federated.config import ClientDPConfig, PoisoningConfig
from medsec.federated.local import LocalTraining, train_locally
from medsec.federated.strategies import (
    ARRAYS_KEY,
    EXAMPLES_KEY,
    HE_KEY,
    METRICS_KEY,
    UNIT_WEIGHT_KEY,
)
from medsec.training.job import evaluate_classifier


class InjectedCrash(RuntimeError):
    """A configured fault: this hospital's ClientApp dies in the middle of a round."""


@dataclass
class ClientSite:
    """Everything one hospital holds. ``train``/``val``: its own examples; ``role``: its
    behaviour; ``he_secret``: the hospitals' shared CKKS secret context (None without HE)."""

    partition_id: int
    train: ImageDataset
    val: ImageDataset
    num_classes: int
    build_net: Callable[[], nn.Module]
    training: LocalTraining
    seed: int
    role: str = "honest"  # "honest", "label_flip" or "backdoor"
    attack: PoisoningConfig = PoisoningConfig()
    num_clients: int = 1
    dp: ClientDPConfig | None = None
    crash_round: int | None = None
    he_secret: bytes | None = None
    he_slots: int = 4096
    he_min_contributions: int = 2  # the fewest updates an aggregate this site decrypts sums


SiteProvider = Callable[[Context], ClientSite]
ROUNDS_DONE = "medsec-rounds-done"
HE_DONE = "medsec-he-done"  # last round this node tagged an update for / decrypted


def _once_per_round(context: Context, act: str, server_round: int) -> None:
    """HEError unless ``server_round`` is later than the last round this node did ``act``
    ("tag" or "decrypt") in: one tagged update and one decryption per node and round."""
    done = context.state.config_records.get(HE_DONE) or ConfigRecord({"tag": 0, "decrypt": 0})
    if server_round <= int(done[act]):
        raise he.HEError(f"refused: node {context.node_id} already did '{act}' in round "
                         f"{done[act]}, asked again for round {server_round}")
    done[act] = server_round
    context.state[HE_DONE] = done


def _role(site: ClientSite, server_round: int) -> str:
    """The site's behaviour this round: malicious ones act honestly before ``from_round``."""
    return site.role if server_round >= site.attack.from_round else "honest"


def _training_data(site: ClientSite, server_round: int) -> ImageDataset:
    role = _role(site, server_round)
    if role == "label_flip":
        return poisoning.flip_labels(site.train, site.num_classes)
    if role == "backdoor":
        a = site.attack
        return poisoning.poison_with_trigger(site.train, a.poison_fraction, a.backdoor_target,
                                             a.trigger_size, site.seed + server_round)
    return site.train


def attack_boost(site: ClientSite, server_round: int) -> float:
    """Scale of a malicious update (``attack.boost``; default: the number of clients for a
    backdoor (model replacement), 1 = plain for label flipping; always 1 when honest)."""
    role = _role(site, server_round)
    if role == "honest":
        return 1.0
    if site.attack.boost is not None:
        return float(site.attack.boost)
    return float(site.num_clients) if role == "backdoor" else 1.0


def local_update(site: ClientSite, message: Message, context: Context) -> Message:
    """Handle one ``train`` message (see module docstring)."""
    config = message.content["config"]
    server_round = int(config["server-round"])
    if site.crash_round == server_round:
        raise InjectedCrash(f"hospital {site.partition_id} crashed in round {server_round} "
                            "(injected by federated.faults)")
    global_arrays = from_record(message.content[ARRAYS_KEY])
    net = site.build_net()
    load_arrays(net, global_arrays, who=f"hospital {site.partition_id}")
    record = context.state.config_records.get(ROUNDS_DONE)
    done = int(record["n"]) if record is not None else 0
    result = train_locally(net, _training_data(site, server_round), site.val, site.num_classes,
                           site.training, seed=site.seed + 1000 * server_round + site.partition_id,
                           proximal_mu=float(config.get("proximal-mu", 0.0)), dp=site.dp,
                           rounds_done=done)
    context.state[ROUNDS_DONE] = ConfigRecord({"n": done + 1})
    arrays = result.arrays
    boost = attack_boost(site, server_round)
    if boost != 1.0:
        arrays = poisoning.scale_update(global_arrays, arrays, boost)
    metrics = MetricRecord({
        EXAMPLES_KEY: result.num_examples, UNIT_WEIGHT_KEY: 1, "partition-id": site.partition_id,
        "train_seconds": result.seconds, "epsilon": result.epsilon, "encrypt_seconds": 0.0,
    })
    if site.dp is None:  # under DP-SGD the raw loss would leak outside the guarantee
        metrics["train_loss"] = result.train_loss
    if site.he_secret is None:
        content = RecordDict({ARRAYS_KEY: to_record(arrays), METRICS_KEY: metrics})
    else:
        start = time.perf_counter()
        decryptor = int(config["he-decryptor"])
        _once_per_round(context, "tag", server_round)
        chunks = he.encrypt_vector(site.he_secret, result.num_examples * flatten(arrays),
                                   site.he_slots)
        tag = he.contribution_tag(site.he_secret, server_round, context.node_id, decryptor,
                                  chunks)
        metrics["encrypt_seconds"] = time.perf_counter() - start
        content = RecordDict({HE_KEY: ConfigRecord({"ciphertext": chunks, "tag": tag}),
                              METRICS_KEY: metrics})
    return Message(content, reply_to=message)


def local_evaluation(site: ClientSite, message: Message) -> Message:
    """Handle an ``evaluate`` message: the global model on this hospital's validation data
    (``fed_val_acc``, ``fed_val_loss``; multi-label data: macro accuracy over findings, mean
    BCE, and ``fed_val_exact_match``, see :func:`~medsec.metrics.classification.
    multilabel_metrics`)."""
    net = site.build_net()
    load_arrays(net, from_record(message.content[ARRAYS_KEY]),
                who=f"hospital {site.partition_id}")
    ev = evaluate_classifier(net, site.val, site.num_classes, prefix="fed_val_")
    keys = ("fed_val_acc", "fed_val_loss", "fed_val_exact_match")
    metrics = MetricRecord({EXAMPLES_KEY: len(site.val), UNIT_WEIGHT_KEY: 1,
                            **{k: ev.metrics[k] for k in keys if k in ev.metrics}})
    return Message(RecordDict({METRICS_KEY: metrics}), reply_to=message)


def decrypt_aggregate(site: ClientSite, message: Message, context: Context) -> Message:
    """Handle ``query.decrypt``: decrypt a sum of at least ``site.he_min_contributions``
    tagged updates of one round that names this node as its decryptor, once per round
    (:func:`medsec.federated.he.verified_sum`); anything else is refused (HEError)."""
    if site.he_secret is None:
        raise he.HEError(f"hospital {site.partition_id} holds no CKKS secret key")
    record = message.content[HE_KEY]
    if not {"round", "nodes", "tags", "ciphertext", "size"} <= set(record):
        raise he.HEError("refused: a decryption request must list the tagged contributions")
    nodes, chunks = [int(n) for n in record["nodes"]], list(record["ciphertext"])
    per_update = len(chunks) // max(1, len(nodes))
    updates = [chunks[i * per_update:(i + 1) * per_update] for i in range(len(nodes))]
    summed = he.verified_sum(site.he_secret, int(record["round"]), context.node_id, nodes,
                             list(record["tags"]), updates, max(2, site.he_min_contributions))
    _once_per_round(context, "decrypt", int(record["round"]))
    vector = he.decrypt_vector(site.he_secret, summed, int(record["size"]))
    return Message(RecordDict({ARRAYS_KEY: to_record({"aggregate": np.asarray(vector)})}),
                   reply_to=message)


def build_client_app(provider: SiteProvider) -> ClientApp:
    """A ``ClientApp`` whose handlers read the hospital's site from ``provider(context)``."""
    app = ClientApp()

    @app.train()
    def _train(message: Message, context: Context) -> Message:
        return local_update(provider(context), message, context)

    @app.evaluate()
    def _evaluate(message: Message, context: Context) -> Message:
        return local_evaluation(provider(context), message)

    @app.query("decrypt")
    def _decrypt(message: Message, context: Context) -> Message:
        return decrypt_aggregate(provider(context), message, context)

    return app
