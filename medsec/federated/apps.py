"""Flower apps for the deployment engine: the server and each hospital as its own process.

:func:`deployment_apps` builds the ``ServerApp`` and the hospitals' ``ClientApp`` around a
:data:`Resolve` function: the run config's ``config`` (a YAML path) and ``overrides`` (dotted
overrides separated by spaces) -> the run's :class:`Deployment` (settings and data).
``federated_app/pyproject.toml`` points ``flwr run`` at the apps ``medsec.stages.federated``
builds with the MedSec config loader, so server and hospitals load the data themselves; a
SuperNode is told which hospital it is by ``--node-config "partition-id=K num-partitions=N"``
(N must equal ``federated.num_clients``). The server writes the final global model and the
per-round numbers to the run config's ``output-dir``. See the README for the commands.

CKKS in deployment: the hospitals' shared key pair comes from files made with
``python -m medsec.federated.apps keygen DIR``: the ServerApp reads only
``he-public-key`` (run config), each SuperNode ``he-secret-key`` (node config).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from medsec.data.types import LoadedDataset
from medsec.errors import ConfigError
from medsec.federated import he
from medsec.federated.client import ClientSite, build_client_app
from medsec.federated.config import FederatedConfig
from medsec.federated.server import FederationOutcome, ServerPlan, run_server
from medsec.federated.simulation import (
    FederatedResult,
    FederationSetup,
    federation_result,
    net_builder,
    setup_federation,
)
from medsec.training.config import ClassifierRecipe

DEFAULT_OUTPUT = "models/federated-deployment"


@dataclass(frozen=True)
class Deployment:
    """A deployment run's settings (the ``federated`` section, the hospitals' classifier
    recipe) and its data."""

    fed: FederatedConfig
    recipe: ClassifierRecipe
    data: LoadedDataset


Resolve = Callable[[str, str], Deployment]
"""``(config, overrides)`` of the run config -> its :class:`Deployment` (called often: cache)."""

Report = Callable[[Context, Deployment, FederatedResult], None]
"""Called by the server once the federation is over (e.g. to track it like a simulation)."""


@lru_cache(maxsize=4)
def _setup(resolve: Resolve, config: str, overrides: str, public_key: str,
           secret_key: str) -> FederationSetup:
    run = resolve(config, overrides)
    keys = None
    if run.fed.secure_aggregation == "ckks":
        public = Path(public_key).read_bytes() if public_key else b""
        secret = Path(secret_key).read_bytes() if secret_key else b""
        keys = he.HEKeys(secret=secret or None, public=public,
                         slots=run.fed.he.poly_modulus_degree // 2)
    return setup_federation(run.fed, run.recipe, run.data, keys=keys)


def _run_key(context: Context) -> tuple[str, str]:
    rc = context.run_config
    return str(rc.get("config", "params.yaml")), str(rc.get("overrides", ""))


def hospital_site(resolve: Resolve, context: Context) -> ClientSite:
    """This SuperNode's hospital, from ``node_config["partition-id"]``."""
    nc = context.node_config
    setup = _setup(resolve, *_run_key(context), "", str(nc.get("he-secret-key", "")))
    n = len(setup.sites)
    if int(nc.get("num-partitions", n)) != n:
        raise ConfigError(f"node_config num-partitions={nc['num-partitions']} but "
                          f"federated.num_clients={n}")
    pid = int(nc.get("partition-id", -1))
    if not 0 <= pid < n:
        raise ConfigError(f"node_config partition-id={pid} is not in 0..{n - 1}")
    return setup.sites[pid]


def _save(outcome: FederationOutcome, run: Deployment, output_dir: Path) -> None:
    """Final global model (``federated.pt``) and per-round numbers (``history.json``)."""
    from medsec.federated.arrays import load_arrays
    from medsec.io import write_json
    from medsec.training.checkpoint import save_classifier
    from medsec.training.job import model_meta

    model = net_builder(run.recipe, run.data)()
    load_arrays(model, outcome.arrays, who="server")
    save_classifier(output_dir / "federated.pt", model,
                    model_meta(run.recipe, run.data) | {"federated": True})
    write_json(output_dir / "history.json", {
        "global_metrics": outcome.global_metrics, "seconds": outcome.seconds,
        "rounds": [vars(r) for r in outcome.rounds]})


def server_plan(resolve: Resolve, context: Context, report: Report | None = None) -> ServerPlan:
    """The server's plan; it keeps only the public CKKS context (``he-public-key``). When the
    federation ends it saves the model and history to ``output-dir`` and calls ``report``
    with the same :class:`FederatedResult` a simulation returns."""
    rc = context.run_config
    config, overrides = _run_key(context)
    setup = _setup(resolve, config, overrides, str(rc.get("he-public-key", "")), "")
    run = resolve(config, overrides)
    out = Path(str(rc.get("output-dir", DEFAULT_OUTPUT)))

    def finish(outcome: FederationOutcome) -> None:
        _save(outcome, run, out)
        if report is not None:
            report(context, run, federation_result(run.fed, run.recipe, run.data, setup, outcome))

    setup.plan.on_finish = finish
    return setup.plan


class HospitalApp(ClientApp):
    """The hospitals' ``ClientApp``: the message-API app, or the legacy SecAgg+ app when the
    run's settings say ``secure_aggregation=secaggplus``."""

    def __init__(self, resolve: Resolve) -> None:
        super().__init__()
        self._resolve = resolve
        self._site = partial(hospital_site, resolve)
        self._message_app = build_client_app(self._site)
        self._secagg_app: ClientApp | None = None

    def __call__(self, message: Message, context: Context) -> Message:
        if self._resolve(*_run_key(context)).fed.secure_aggregation != "secaggplus":
            return self._message_app(message, context)
        if self._secagg_app is None:
            from medsec.federated.secagg import build_secagg_client_app

            self._secagg_app = build_secagg_client_app(self._site)
        return self._secagg_app(message, context)


def deployment_apps(resolve: Resolve, report: Report | None = None
                    ) -> tuple[ServerApp, HospitalApp]:
    """The deployment ``ServerApp`` and hospitals' ``ClientApp`` of runs resolved by
    ``resolve``; the server calls ``report`` when a federation is over."""
    server_app = ServerApp()

    @server_app.main()
    def _server_main(grid: Grid, context: Context) -> None:
        plan = server_plan(resolve, context, report)
        if plan.fed.secure_aggregation == "secaggplus":
            from medsec.federated.secagg import run_secagg_server

            run_secagg_server(grid, plan)
        else:
            run_server(grid, plan)

    return server_app, HospitalApp(resolve)


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
