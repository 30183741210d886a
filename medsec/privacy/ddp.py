"""DP-SGD across processes: Opacus' distributed recipe (``DPDDP``) in a plain torch loop.

Opacus' Lightning integration does not work with lightning 2.6 (see stack notes), so
multi-process DP training is Opacus' own documented recipe: every rank wraps the same network
in :class:`opacus.distributed.DifferentiallyPrivateDistributedDataParallel` (rank 0's weights
are broadcast), ``PrivacyEngine.make_private`` turns the loader into a distributed Poisson
loader (each rank samples its shard of the data with the *global* rate ``q = batch_size / N``)
and the optimizer into ``DistributedDPOptimizer``: each rank clips its per-sample gradients,
**rank 0 alone adds the Gaussian noise** (std ``noise_multiplier * max_grad_norm``), the sums
are all-reduced and divided by the expected global batch. One global step is therefore the
same Gaussian mechanism as one single-process DP-SGD step with the same ``q``, noise and
clipping, and the accountant (read on rank 0) gives the same epsilon.

Processes are started with ``torch.multiprocessing`` (``spawn``; gloo on the CPU, NCCL on
GPUs) under a timeout (a hung collective would otherwise wait 30 minutes).

Usage::

    spec = DDPDPSpec(images, labels, epochs=2, batch_size=64, noise_multiplier=1.0)
    [result] = train_dp_distributed(spec, world_size=2)
    result.epsilon, result.steps, result.state_dict
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from medsec.models.factory import PixelSpaceClassifier, build_classifier
from medsec.privacy.training import FIXED_MEAN, FIXED_STD
from medsec.training.module import classification_loss


@dataclass(frozen=True)
class DDPDPSpec:
    """One distributed DP-SGD run.

    ``images`` float32 (N, C, H, W) in [0, 1], ``labels`` int64 (N,) or multi-hot float32
    (N, L) (multi-label: BCE, ``num_classes`` = L findings); ``batch_size`` is the
    expected *global* logical batch (sampling rate ``q = batch_size / N``); SGD with ``lr`` and
    ``momentum``; the network is ``model_name`` with GroupNorm and fixed normalisation (0.5);
    ``max_steps`` stops early (None: ``epochs`` full epochs of ``N / batch_size`` steps).
    """

    images: np.ndarray
    labels: np.ndarray
    epochs: int = 1
    batch_size: int = 64
    noise_multiplier: float = 1.0
    max_grad_norm: float = 1.0
    delta: float = 1e-5
    lr: float = 0.1
    momentum: float = 0.0
    accountant: str = "prv"
    model_name: str = "small_cnn"
    num_classes: int = 2
    seed: int = 0
    max_steps: int | None = None
    accelerator: str = "cpu"


@dataclass
class DDPDPResult:
    """Rank 0's outcome: weights (CPU), epsilon at ``delta``, global steps taken, the sampling
    rate the accountant used and the number of processes."""

    state_dict: dict[str, torch.Tensor]
    epsilon: float
    steps: int
    sample_rate: float
    world_size: int
    seconds: float


def build_net(spec: DDPDPSpec) -> PixelSpaceClassifier:
    """The seeded network of ``spec`` (the same weights on every rank and in the caller)."""
    torch.manual_seed(spec.seed)
    c, h, w = spec.images.shape[1:]
    return build_classifier(spec.model_name, c, spec.num_classes, (h, w), mean=[FIXED_MEAN] * c,
                            std=[FIXED_STD] * c, norm="group")


def dp_train_rank(spec: DDPDPSpec, device: torch.device) -> DDPDPResult | None:
    """Train on this rank of an initialised process group; rank 0 returns the result."""
    from opacus import PrivacyEngine
    from opacus.distributed import DifferentiallyPrivateDistributedDataParallel as DPDDP

    from medsec.privacy.dp import check_dp_compatible

    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    net = build_net(spec).to(device)
    check_dp_compatible(net)
    model = DPDDP(net)  # broadcasts rank 0's weights
    optimizer = torch.optim.SGD(net.parameters(), lr=spec.lr, momentum=spec.momentum)
    labels = torch.from_numpy(spec.labels)
    dataset = TensorDataset(torch.from_numpy(spec.images).float(),
                            labels.float() if labels.ndim == 2 else labels.long())
    # the whole data set and the global batch: Opacus derives q = 1 / len(loader) from it and
    # gives each rank a Poisson sampler over its shard at that rate
    loader = DataLoader(dataset, batch_size=spec.batch_size)
    torch.manual_seed(spec.seed * 1000 + 1 + rank)  # independent sampling per rank
    engine = PrivacyEngine(accountant=spec.accountant)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, optimizer, loader = engine.make_private(
            module=model, optimizer=optimizer, data_loader=loader,
            noise_multiplier=spec.noise_multiplier, max_grad_norm=spec.max_grad_norm,
            poisson_sampling=True)
    sample_rate = 1.0 / len(loader)
    steps, start = 0, time.perf_counter()
    model.train()
    for _ in range(spec.epochs):
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad(set_to_none=True)
            logits = model(x)
            # an empty Poisson batch still steps (noise only) on every rank, in lockstep
            loss = classification_loss(logits, y) if len(y) else logits.sum()
            loss.backward()
            optimizer.step()
            steps += 1
            if spec.max_steps is not None and steps >= spec.max_steps:
                break
        if spec.max_steps is not None and steps >= spec.max_steps:
            break
    if rank != 0:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        epsilon = float(engine.get_epsilon(spec.delta))
    return DDPDPResult({k: v.detach().cpu() for k, v in net.state_dict().items()}, epsilon,
                       steps, sample_rate, world, time.perf_counter() - start)


def _worker(rank: int, world: int, port: int, specs: list[DDPDPSpec], outs: list[str]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if world > 1:
        torch.set_num_threads(1)
    gpu = specs[0].accelerator == "gpu"
    torch.distributed.init_process_group("nccl" if gpu else "gloo", rank=rank,
                                         world_size=world)
    try:
        device = torch.device("cuda", rank) if gpu else torch.device("cpu")
        for spec, out in zip(specs, outs, strict=True):  # one process group, several runs
            result = dp_train_rank(spec, device)
            if result is not None:
                torch.save(result.__dict__, out)
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train_dp_distributed(specs: DDPDPSpec | Sequence[DDPDPSpec], world_size: int = 2,
                         timeout: float = 600.0) -> list[DDPDPResult]:
    """Run each of ``specs`` in turn on ``world_size`` processes; rank 0's results, in order.

    ``world_size`` 1 runs in this process (a one-rank gloo/NCCL group), more are spawned with
    ``torch.multiprocessing``. RuntimeError when a rank fails or the runs exceed ``timeout``
    seconds (all ranks killed). All specs share ``specs[0].accelerator``.
    """
    import torch.multiprocessing as mp

    from medsec.training.devices import resolve_accelerator

    specs = [specs] if isinstance(specs, DDPDPSpec) else list(specs)
    accelerator = resolve_accelerator(specs[0].accelerator, world_size)
    specs = [replace(spec, accelerator=accelerator) for spec in specs]
    with tempfile.TemporaryDirectory(prefix="medsec-dpddp-") as tmp:
        outs = [str(Path(tmp) / f"run{i}.pt") for i in range(len(specs))]
        if world_size == 1:
            saved = {k: os.environ.get(k) for k in ("MASTER_ADDR", "MASTER_PORT")}
            try:
                _worker(0, 1, _free_port(), specs, outs)
            finally:
                for key, value in saved.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value
        else:
            context = mp.start_processes(_worker, args=(world_size, _free_port(), specs, outs),
                                         nprocs=world_size, join=False, start_method="spawn")
            deadline = time.monotonic() + timeout
            try:
                while not context.join(timeout=1.0):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"distributed DP training exceeded {timeout:.0f} s")
            finally:
                for process in context.processes:
                    if process.is_alive():
                        process.kill()
        return [DDPDPResult(**torch.load(out, weights_only=True)) for out in outs]
