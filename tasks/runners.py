"""Where the sweeps' mapped tasks run, and how their results are cached.

:func:`check_runner` fails fast (one line, before any work) when ``runner.address`` names a
Dask scheduler that does not answer. :func:`sweep_runner` yields the task runner of a sweep:
the flow's own (in-process thread pool) for ``runner.kind=local``, prefect-dask's
``DaskTaskRunner`` for ``dask`` (an existing scheduler, or a ``LocalCluster`` of
single-threaded worker processes whose scratch space is in the run directory).
:func:`sweep_task` gives a task its retries, its input-derived cache key and persisted results
(pickled, in ``<run dir>/.prefect/results``). :func:`outcomes` turns mapped futures into
results and one-line errors, so one failed item does not stop a sweep.

Dask workers report to the Prefect API of the parent process: export ``PREFECT_API_URL`` (the
``medsec`` CLI starts a private server) before a Dask sweep, or each worker starts its own
temporary server.
"""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from prefect import Task
from prefect.cache_policies import CacheKeyFnPolicy
from prefect.context import FlowRunContext, TaskRunContext
from prefect.futures import PrefectFuture
from prefect.task_runners import TaskRunner

from medsec.config import RunnerConfig
from medsec.errors import ConfigError

SCRATCH = Path(".prefect")
"""Per-run scratch (results, Dask spill space) under the output root; git-ignored."""
CONNECT_TIMEOUT = 5.0


def check_runner(settings: RunnerConfig) -> None:
    """ConfigError naming ``runner.address`` when ``kind=dask`` and no scheduler listens there."""
    if settings.kind != "dask" or not settings.address:
        return
    parts = urlsplit(settings.address)
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=CONNECT_TIMEOUT):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"runner.address: no Dask scheduler answers at {settings.address} "
                          f"({reason}); start one (dask scheduler) or use runner.kind=local"
                          ) from None


def results_dir(out: str | Path) -> Path:
    """Where a run's sweep results are persisted: ``<out>/.prefect/results``."""
    return Path(out) / SCRATCH / "results"


@contextmanager
def sweep_runner(settings: RunnerConfig, out: str | Path = ".") -> Iterator[TaskRunner]:
    """The task runner of one sweep (call inside a flow). ``local``: the flow's own runner.
    ``dask``: a ``DaskTaskRunner`` on ``settings.address`` or on a new ``LocalCluster``
    (``n_workers`` processes, one thread each, dashboard on a free port, scratch space in
    ``<out>/.prefect/dask``), closed when the sweep ends."""
    if settings.kind == "local":
        context = FlowRunContext.get()
        if context is None or context.task_runner is None:
            raise RuntimeError("sweep_runner(kind=local) must be called inside a flow")
        yield context.task_runner
        return
    check_runner(settings)
    from prefect_dask import DaskTaskRunner

    if settings.address:
        runner = DaskTaskRunner(address=settings.address)
    else:
        scratch = (Path(out) / SCRATCH / "dask").resolve()
        scratch.mkdir(parents=True, exist_ok=True)
        runner = DaskTaskRunner(cluster_kwargs={
            "n_workers": settings.n_workers, "threads_per_worker": 1, "processes": True,
            "host": "127.0.0.1", "dashboard_address": ":0", "local_directory": str(scratch)})
    with runner:
        yield runner


def digest(*parts: Any) -> str:
    """sha256 of the JSON of ``parts`` (sorted keys; non-JSON values by ``str``)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def model_digest(model: Any) -> str:
    """sha256 of a torch module's state dict (names, dtypes, shapes and raw bytes)."""
    import torch

    sha = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        sha.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)}".encode())
        sha.update(flat.view(torch.uint8).numpy().tobytes())
    return sha.hexdigest()


KeyFn = Callable[[dict[str, Any]], Iterable[Any]]
"""A task's parameters -> the parts of its cache key (config section, data version, ...)."""


def sweep_task(task: Task, key_parts: KeyFn, out: str | Path, retries: int) -> Task:
    """``task`` with ``retries`` (1 s apart), persisted results in :func:`results_dir` and a
    cache key made of the task's name and ``key_parts(parameters)``: a rerun in the same
    output root with the same inputs reuses the stored result instead of recomputing it."""
    name = task.name

    def cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
        return f"{name}-{digest(*key_parts(parameters))}"

    storage = results_dir(out).resolve()
    storage.mkdir(parents=True, exist_ok=True)
    return task.with_options(
        retries=retries, retry_delay_seconds=1, persist_result=True,
        result_storage=storage,
        cache_policy=CacheKeyFnPolicy(cache_key_fn=cache_key))


@dataclass
class Outcome:
    """One mapped item: its ``value`` when it completed, else the one-line ``error``."""

    value: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def status(self) -> str:
        return "ok" if self.ok else f"failed: {self.error}"


def outcomes(futures: Iterable[PrefectFuture]) -> list[Outcome]:
    """Wait for every future; a failed one (its task raised after its retries, or the runner
    gave up on it) becomes an :class:`Outcome` with the first line of its exception (type and
    message), the others their result."""
    out = []
    for future in futures:
        try:
            value = future.result(raise_on_failure=False)
        except Exception as exc:  # e.g. Dask's KilledWorker: the task killed its workers
            value = exc
        if isinstance(value, BaseException):
            line = (str(value).strip().splitlines() or [""])[0][:300]
            out.append(Outcome(error=f"{type(value).__name__}: {line}"))
        else:
            out.append(Outcome(value=value))
    return out
