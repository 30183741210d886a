"""Federated learning on PneumoniaMNIST: FedAvg vs centralised, non-IID, poisoning, crypto cost.

Every federation uses 5 hospitals, ``--rounds`` rounds of ``--local-epochs`` local epochs; the
centralised baseline trains the same model for ``rounds * local_epochs`` epochs (last-epoch
weights for both, no model selection). Prints one line per scenario (test accuracy/AUC,
backdoor success rate, epsilon, seconds per round, payload bytes per client and round) and
writes them to ``--out`` as JSON.

    .venv/bin/python benchmarks/bench_federated.py --rounds 5 --local-epochs 2
    .venv/bin/python benchmarks/bench_federated.py --only iid,he   # a subset
    .venv/bin/python benchmarks/bench_federated.py --only he_check  # CKKS on identical updates

Secure federations are also compared with the plaintext one weight by weight: they aggregate
in float64 while Flower's FedAvg sums float32 arrays, and training amplifies that ~1e-7
difference over rounds, so the ``*_vs_plaintext_max_abs_diff`` rows measure more than the
cryptography; ``he_check`` isolates it.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from medsec.config import MedSecConfig, load_config
from medsec.data.registry import load_dataset
from medsec.federated.arrays import model_arrays
from medsec.federated.simulation import FederatedResult
from medsec.federated.strategies import FederationError
from medsec.stages import classifier
from medsec.stages import federated as stage

ROOT = Path(__file__).resolve().parents[1]
FLIP = {"kind": "label_flip", "malicious_clients": [0]}
BOOSTED_FLIP = {**FLIP, "boost": 5.0}
GROUP = ["model.norm=group"]


def scenarios(rounds: int) -> dict[str, tuple[str, list[str], dict[str, Any]]]:
    """name -> (group, extra overrides, federated section)."""
    backdoor = {"kind": "backdoor", "malicious_clients": [0], "from_round": rounds,
                "poison_fraction": 0.5, "trigger_size": 3, "backdoor_target": 0}
    return {
        "fedavg_iid": ("iid", [], {}),
        "fedavg_dirichlet_0.1": ("noniid", [], {"partition": "dirichlet",
                                                "dirichlet_alpha": 0.1}),
        "fedprox_dirichlet_0.1": ("noniid", [], {"partition": "dirichlet",
                                                 "dirichlet_alpha": 0.1,
                                                 "strategy": "fedprox", "proximal_mu": 0.01}),
        "fedavg_label_skew_1": ("noniid", [], {"partition": "label_skew",
                                               "classes_per_client": 1}),
        "flip_fedavg": ("flip", [], {"attack": FLIP}),
        "flip_median": ("flip", [], {"attack": FLIP, "strategy": "median"}),
        "flip_trimmed_mean": ("flip", [], {"attack": FLIP, "strategy": "trimmed_mean"}),
        "flip_krum": ("flip", [], {"attack": FLIP, "strategy": "krum"}),
        "boostflip_fedavg": ("boostflip", [], {"attack": BOOSTED_FLIP}),
        "boostflip_median": ("boostflip", [], {"attack": BOOSTED_FLIP, "strategy": "median"}),
        "boostflip_trimmed_mean": ("boostflip", [], {"attack": BOOSTED_FLIP,
                                                     "strategy": "trimmed_mean"}),
        "boostflip_krum": ("boostflip", [], {"attack": BOOSTED_FLIP, "strategy": "krum"}),
        "backdoor_fedavg": ("backdoor", [], {"attack": backdoor}),
        "backdoor_median": ("backdoor", [], {"attack": backdoor, "strategy": "median"}),
        "ckks_iid": ("he", [], {"secure_aggregation": "ckks"}),
        "secaggplus_iid": ("he", [], {"secure_aggregation": "secaggplus"}),
        "groupnorm_iid": ("dp", GROUP, {}),
        "client_dp_eps8": ("dp", GROUP, {"client_dp": {"enabled": True,
                                                        "target_epsilon": 8.0}}),
        "central_dp_fixed": ("dp", GROUP, {"central_dp": {"mode": "fixed",
                                                           "noise_multiplier": 0.1,
                                                           "clipping_norm": 1.0}}),
        "central_dp_adaptive": ("dp", GROUP, {"central_dp": {"mode": "adaptive",
                                                              "noise_multiplier": 0.1,
                                                              "clipping_norm": 1.0}}),
    }


def base_config(args: argparse.Namespace, extra: list[str], federated: dict) -> MedSecConfig:
    cfg = load_config(preset="pneumoniamnist", overrides=[
        f"dataset.data_dir={args.data_dir}", f"train.num_threads={args.threads}",
        "train.select_best=false", *extra])
    section = {"num_clients": 5, "rounds": args.rounds, "local_epochs": args.local_epochs,
               "compare_centralized": False, **federated}
    return cfg.model_copy(update={"federated": type(cfg.federated).model_validate(section)})


def row(name: str, result: FederatedResult, seconds: float) -> dict[str, float | str]:
    s = result.summary
    keys = ("test_acc", "test_auc", "backdoor_success_rate", "backdoor_baseline_rate",
            "epsilon_client_max", "epsilon_central", "mean_round_seconds",
            "upload_bytes_per_client", "download_bytes_per_client", "label_skew")
    return {"scenario": name, **{k: float(s[k]) for k in keys if k in s},
            "wall_seconds": seconds}


def he_aggregation_check(args: argparse.Namespace, data) -> dict[str, float | str]:
    """CKKS vs plaintext FedAvg on the *same* real client updates (one local round of the 5
    hospitals from the initial model): max |difference|, seconds (encrypt + tag per client;
    the decrypting hospital's tag checks + homomorphic sum; decryption) and bytes."""
    from flwr.app import MetricRecord, RecordDict
    from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

    from medsec.federated import he
    from medsec.federated.arrays import flatten, load_arrays, to_record, unflatten
    from medsec.federated.local import train_locally
    from medsec.federated.simulation import setup_federation

    cfg = base_config(args, [], {"secure_aggregation": "ckks"})
    setup = setup_federation(cfg.federated, classifier.recipe(cfg), data)
    updates, weights = [], []
    for site in setup.sites:
        net = site.build_net()
        load_arrays(net, setup.plan.initial)
        local = train_locally(net, site.train, site.val, site.num_classes, site.training,
                              seed=site.seed + site.partition_id)
        updates.append(local.arrays)
        weights.append(local.num_examples)
    plain = aggregate_arrayrecords(
        [RecordDict({"arrays": to_record(u), "metrics": MetricRecord({"num-examples": w})})
         for u, w in zip(updates, weights, strict=True)], "num-examples")
    secret, nodes = setup.sites[0].he_secret, list(range(len(updates)))
    start = time.perf_counter()
    uploads = [he.encrypt_vector(secret, w * flatten(u), setup.sites[0].he_slots)
               for u, w in zip(updates, weights, strict=True)]
    tags = [he.contribution_tag(secret, 1, k, 0, c) for k, c in zip(nodes, uploads, strict=True)]
    encrypt = (time.perf_counter() - start) / len(uploads)
    start = time.perf_counter()  # the decrypting hospital: check every tag, add ciphertexts
    summed = he.verified_sum(secret, 1, 0, nodes, tags, uploads, len(uploads))
    aggregate = time.perf_counter() - start
    start = time.perf_counter()
    vector = he.decrypt_vector(secret, summed, len(flatten(updates[0])))
    decrypt = time.perf_counter() - start
    result = unflatten(vector / sum(weights), updates[0])
    diff = max(float(np.abs(result[k] - plain[k].numpy()).max()) for k in result)
    return {"scenario": "ckks_aggregate_vs_plaintext_same_updates", "max_abs_diff": diff,
            "encrypt_seconds_per_client": encrypt, "verified_sum_seconds": aggregate,
            "decrypt_seconds": decrypt, "ciphertext_bytes_per_client": float(
                sum(len(c) for c in uploads[0])),
            "plaintext_bytes_per_client": float(sum(v.nbytes for v in updates[0].values()))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--local-epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "datasets"))
    parser.add_argument("--only", default="", help="comma-separated groups or scenario names")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "federated_results.json"))
    args = parser.parse_args()
    logging.getLogger("flwr").setLevel(logging.WARNING)
    data = load_dataset("pneumoniamnist", args.data_dir)
    wanted = {w for w in args.only.split(",") if w}
    rows: list[dict] = []
    finals: dict[str, dict[str, np.ndarray]] = {}
    todo = {k: v for k, v in scenarios(args.rounds).items()
            if not wanted or k in wanted or v[0] in wanted}
    if not wanted or "central" in wanted or "iid" in wanted:
        cfg = base_config(args, [], {})
        start = time.perf_counter()
        base = stage.centralized_baseline(cfg, data)
        rows.append({"scenario": "centralized", "test_acc": base["centralized_test_acc"],
                     "test_auc": base["centralized_test_auc"],
                     "epochs": base["centralized_epochs"],
                     "wall_seconds": time.perf_counter() - start})
        print(rows[-1], flush=True)
    for name, (_, extra, federated) in todo.items():
        cfg = base_config(args, extra, federated)
        start = time.perf_counter()
        try:
            result = stage.run(cfg, data)
        except FederationError as exc:  # e.g. a poisoned FedAvg whose model diverged
            rows.append({"scenario": name, "error": str(exc)[:300]})
            print(rows[-1], flush=True)
            continue
        rows.append(row(name, result, time.perf_counter() - start))
        finals[name] = model_arrays(result.model)
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in rows[-1].items()},
              flush=True)
    if wanted and "he_check" in wanted:
        rows.append(he_aggregation_check(args, data))
        print(rows[-1], flush=True)
    for secure in ("ckks_iid", "secaggplus_iid"):
        if secure in finals and "fedavg_iid" in finals:
            diff = max(float(np.abs(finals[secure][k] - finals["fedavg_iid"][k]).max())
                       for k in finals[secure])
            rows.append({"scenario": f"{secure}_vs_plaintext_max_abs_diff", "value": diff})
            print(rows[-1], flush=True)
    Path(args.out).write_text(json.dumps(rows, indent=2, default=_finite) + "\n")
    print(f"wrote {args.out}")


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


if __name__ == "__main__":
    main()
