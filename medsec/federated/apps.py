"""Flower apps for the deployment engine: the server and each hospital as its own process.

``federated_app/pyproject.toml`` points ``flwr run`` at :data:`server_app` and
:data:`client_app`. Both read the MedSec config named in the run config (``config``: a YAML
path, ``overrides``: dotted overrides separated by spaces) and load the data themselves; a
SuperNode is told which hospital it is by ``--node-config "partition-id=K num-partitions=N"``
(N must equal ``federated.num_clients``). The server writes the final global model and the
per-round numbers to the run config's ``output-dir``. See the README for the commands.

CKKS in deployment: the hospitals' shared key pair comes from files made with
``python -m medsec.federated.apps keygen DIR``: the ServerApp reads only
``he-public-key`` (run config), each SuperNode ``he-secret-key`` (node config).
"""

from __future__ import annotations

import shlex
import sys
from functools import lru_cache
from pathlib import Path

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from medsec.config import MedSecConfig, load_config
from medsec.data.registry import load_dataset
from medsec.data.types import LoadedDataset
from medsec.errors import ConfigError
from medsec.federated import he
from medsec.federated.client import ClientSite, build_client_app
from medsec.federated.server import FederationOutcome, ServerPlan, run_server
from medsec.federated.simulation import FederationSetup, net_builder, setup_federation

DEFAULT_OUTPUT = "models/federated-deployment"


def _config(run_config: dict) -> MedSecConfig:
    overrides = shlex.split(str(run_config.get("overrides", "")))
    return load_config(str(run_config.get("config", "params.yaml")), overrides=overrides)


@lru_cache(maxsize=2)
def _load(config: str, overrides: str) -> tuple[MedSecConfig, LoadedDataset]:
    cfg = _config({"config": config, "overrides": overrides})
    return cfg, load_dataset(cfg.dataset.name, cfg.dataset.data_dir)


@lru_cache(maxsize=4)
def _setup(config: str, overrides: str, public_key: str, secret_key: str) -> FederationSetup:
    cfg, data = _load(config, overrides)
    keys = None
    if cfg.federated.secure_aggregation == "ckks":
        public = Path(public_key).read_bytes() if public_key else b""
        secret = Path(secret_key).read_bytes() if secret_key else b""
        keys = he.HEKeys(secret=secret or None, public=public,
                         slots=cfg.federated.he.poly_modulus_degree // 2)
    return setup_federation(cfg, data, keys=keys)


def _run_key(context: Context) -> tuple[str, str]:
    rc = context.run_config
    return str(rc.get("config", "params.yaml")), str(rc.get("overrides", ""))


def hospital_site(context: Context) -> ClientSite:
    """This SuperNode's hospital, from ``node_config["partition-id"]``."""
    nc = context.node_config
    setup = _setup(*_run_key(context), "", str(nc.get("he-secret-key", "")))
    n = len(setup.sites)
    if int(nc.get("num-partitions", n)) != n:
        raise ConfigError(f"node_config num-partitions={nc['num-partitions']} but "
                          f"federated.num_clients={n}")
    pid = int(nc.get("partition-id", -1))
    if not 0 <= pid < n:
        raise ConfigError(f"node_config partition-id={pid} is not in 0..{n - 1}")
    return setup.sites[pid]


def _save(outcome: FederationOutcome, cfg: MedSecConfig, data: LoadedDataset,
          output_dir: Path) -> None:
    """Final global model (``federated.pt``) and per-round numbers (``history.json``)."""
    from medsec.federated.arrays import load_arrays
    from medsec.io import write_json
    from medsec.training.checkpoint import save_classifier
    from medsec.training.job import model_meta

    model = net_builder(cfg, data)()
    load_arrays(model, outcome.arrays, who="server")
    save_classifier(output_dir / "federated.pt", model,
                    model_meta(cfg, data) | {"federated": True})
    write_json(output_dir / "history.json", {
        "global_metrics": outcome.global_metrics, "seconds": outcome.seconds,
        "rounds": [vars(r) for r in outcome.rounds]})


def server_plan(context: Context) -> ServerPlan:
    """The server's plan; it keeps only the public CKKS context (``he-public-key``)."""
    rc = context.run_config
    config, overrides = _run_key(context)
    setup = _setup(config, overrides, str(rc.get("he-public-key", "")), "")
    cfg, data = _load(config, overrides)
    out = Path(str(rc.get("output-dir", DEFAULT_OUTPUT)))
    setup.plan.on_finish = lambda outcome: _save(outcome, cfg, data, out)
    return setup.plan


server_app = ServerApp()


@server_app.main()
def _server_main(grid: Grid, context: Context) -> None:
    plan = server_plan(context)
    if plan.fed.secure_aggregation == "secaggplus":
        from medsec.federated.secagg import run_secagg_server

        run_secagg_server(grid, plan)
    else:
        run_server(grid, plan)


class HospitalApp(ClientApp):
    """The hospitals' ``ClientApp``: the message-API app, or the legacy SecAgg+ app when the
    run's config says ``secure_aggregation=secaggplus``."""

    def __init__(self) -> None:
        super().__init__()
        self._message_app = build_client_app(hospital_site)
        self._secagg_app: ClientApp | None = None

    def __call__(self, message: Message, context: Context) -> Message:
        cfg, _ = _load(*_run_key(context))
        if cfg.federated.secure_aggregation != "secaggplus":
            return self._message_app(message, context)
        if self._secagg_app is None:
            from medsec.federated.secagg import build_secagg_client_app

            self._secagg_app = build_secagg_client_app(hospital_site)
        return self._secagg_app(message, context)


client_app = HospitalApp()


def keygen(directory: str | Path, poly_modulus_degree: int = 8192, scale_bits: int = 40) -> None:
    """Write ``secret.ckks`` (hospitals only) and ``public.ckks`` (server) into ``directory``."""
    keys = he.generate_keys(poly_modulus_degree, scale_bits)
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    (target / "secret.ckks").write_bytes(keys.secret)
    (target / "public.ckks").write_bytes(keys.public)
    (target / "secret.ckks").chmod(0o600)


if __name__ == "__main__":  # python -m medsec.federated.apps keygen DIR
    if len(sys.argv) != 3 or sys.argv[1] != "keygen":
        raise SystemExit("usage: python -m medsec.federated.apps keygen DIR")
    keygen(sys.argv[2])
    print(f"wrote {sys.argv[2]}/secret.ckks (hospitals) and public.ckks (server)")
