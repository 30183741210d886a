"""DP-SGD training with Opacus, wired into the project's Lightning ``ClassifierModule``.

Per-sample gradients come from Opacus hooks attached *to the network itself*
(``wrap_model=False``): ``module.net`` stays the same object, its ``state_dict`` keeps its keys
(no ``_module.`` prefix), and the LightningModule's own ``training_step`` drives training. The
DP optimizer (clip, add noise, account) is handed to Lightning through
``module.external_optimizer``; the loader Poisson-samples logical batches and splits them into
physical batches (as Opacus' ``BatchMemoryManager``; the optimizer steps once per logical batch).

Usage (see :class:`medsec.privacy.training.DPStrategy`)::

    plan = plan_dp(dp_config, len(train_loader.dataset), len(train_loader), epochs)
    with private_training(module, train_loader, plan) as (loader, state):
        fit_classifier(module, loader, val_loader, plan.epochs, seed,
                       callbacks=[EpsilonLogger(state)])
    state.epsilon()  # epsilon spent at state.plan.delta with state.plan.accountant
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from opacus import PrivacyEngine
from opacus.grad_sample.utils import prepare_module
from opacus.optimizers import DPOptimizer
from opacus.utils.batch_memory_manager import BatchSplittingSampler
from opacus.validators import ModuleValidator
from torch import nn
from torch.utils.data import DataLoader

from medsec.privacy.plan import DPPlan
from medsec.training.devices import model_device

# --------------------------------------------------------------------------- compatibility

_HINTS: dict[str, str] = {
    "BatchNorm": "use norm='group' (GroupNorm); BatchNorm mixes examples within a batch",
    "InstanceNorm": "set track_running_stats=False",
    "LSTM": "use opacus.layers.DPLSTM",
    "GRU": "use opacus.layers.DPGRU",
    "MultiheadAttention": "use opacus.layers.DPMultiheadAttention",
}
_INPLACE = "in-place operation breaks Opacus' backward hooks; construct it with inplace=False"


def _layer_problems(net: nn.Module) -> dict[str, list[str]]:
    """``{fix hint: ["'name' (Type)", ...]}`` for every layer DP-SGD cannot train."""
    problems: dict[str, list[str]] = {}
    for name, sub in net.named_modules():
        label = f"'{name or '<root>'}' ({type(sub).__name__})"
        validator = ModuleValidator.VALIDATORS.get(type(sub))
        has_params = any(p.requires_grad for p in sub.parameters(recurse=False))
        errors = [str(e) for e in validator(sub)] if validator and has_params else []
        if isinstance(sub, nn.modules.batchnorm._BatchNorm) and not errors:
            errors = ["BatchNorm"]  # affine=False: Opacus skips it, yet it mixes examples
        if errors:
            hint = next((h for key, h in _HINTS.items() if key in type(sub).__name__),
                        errors[0].split(". ")[0])
            problems.setdefault(hint, []).append(label)
        if getattr(sub, "inplace", False) is True:
            problems.setdefault(_INPLACE, []).append(label)
    return problems


def check_dp_compatible(net: nn.Module, example_input: torch.Tensor | None = None) -> None:
    """Raise ValueError naming every layer DP-SGD cannot train (BatchNorm, in-place ops, ...).

    Static checks use Opacus' ``ModuleValidator`` per named layer plus an ``inplace`` scan. With
    ``example_input`` (N>=2,C,H,W in [0,1]) a dry run with Opacus hooks (one forward/backward
    on a copy of ``net``) also catches in-place tensor ops in ``forward`` code (e.g. MONAI
    ResNet's ``out += residual``).
    """
    problems = _layer_problems(net)
    if problems:
        raise ValueError("; ".join(
            f"layer {labels[0]} is not DP-compatible: {hint}" if len(labels) == 1
            else f"layers {', '.join(labels)} are not DP-compatible: {hint}"
            for hint, labels in problems.items()))
    if example_input is None:
        return
    probe = copy.deepcopy(net).train()
    hooks = prepare_module(probe, grad_sample_mode="hooks", wrap_model=False)
    try:
        probe(example_input.to(model_device(probe))).sum().backward()
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ValueError(
            "net is not DP-compatible: a forward/backward with per-sample-gradient hooks "
            f"failed (often an in-place op such as `out += residual`): {first}"
        ) from None
    finally:
        hooks.cleanup()


def example_batch(loader: DataLoader) -> torch.Tensor | None:
    """Two training images (2,C,H,W) for a dry run; None unless items are (image, label)."""
    dataset = loader.dataset
    try:
        items = [dataset[i] for i in range(min(2, len(dataset)))]  # type: ignore[arg-type]
        return torch.stack([torch.as_tensor(item[0]) for item in items])
    except (TypeError, IndexError, KeyError, RuntimeError):
        return None


# --------------------------------------------------------------------------- private training


@dataclass
class DPState:
    """A running DP-SGD setup: its ``plan``, Opacus' engine (the accountant), DP optimizer and
    per-sample-gradient ``hooks``; ``criterion`` is Opacus' two-pass loss (ghost clipping only,
    else None)."""

    plan: DPPlan
    engine: PrivacyEngine
    optimizer: DPOptimizer
    hooks: Any
    criterion: Any = None

    @property
    def steps(self) -> int:
        """Optimizer steps accounted so far (one per logical batch)."""
        return int(sum(n for _, _, n in self.engine.accountant.history))

    def epsilon(self) -> float:
        """Epsilon spent so far at ``plan.delta`` (0.0 before the first step)."""
        if self.steps == 0:
            return 0.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(self.engine.get_epsilon(self.plan.delta))


def make_private(net: nn.Module, optimizer: torch.optim.Optimizer, train_loader: DataLoader,
                 plan: DPPlan, criterion: nn.Module | None = None,
                 ) -> tuple[DPOptimizer, DataLoader, DPState]:
    """Attach per-sample-gradient hooks to ``net`` (in place) and make a DP optimizer/loader.

    ``net`` is checked first (:func:`check_dp_compatible`, with a dry run on two training
    images); ``plan`` (:func:`medsec.privacy.plan.plan_dp`) must be made for ``train_loader``
    (its number of batches per epoch). Returns the DP optimizer, the (Poisson) logical-batch
    loader and the :class:`DPState`; ``state.hooks.cleanup()`` detaches the hooks. With
    "ghost" use ``state.criterion`` for the loss.
    """
    if plan.steps_per_epoch != len(train_loader):
        raise ValueError(f"the DP plan has {plan.steps_per_epoch} steps per epoch, the loader "
                         f"{len(train_loader)} batches: plan for this loader")
    check_dp_compatible(net, example_batch(train_loader))
    engine = PrivacyEngine(accountant=plan.accountant, secure_mode=plan.secure_mode)
    net.train()
    out = engine.make_private(
        module=net, optimizer=optimizer, data_loader=train_loader,
        criterion=criterion if criterion is not None else nn.CrossEntropyLoss(),
        noise_multiplier=plan.noise_multiplier, max_grad_norm=plan.max_grad_norm,
        poisson_sampling=plan.poisson_sampling, grad_sample_mode=plan.grad_sample_mode,
        wrap_model=False,
    )
    hooks, dp_optimizer, dp_criterion, loader = out if len(out) == 4 else (*out[:2], None, out[2])
    state = DPState(plan=plan, engine=engine, optimizer=dp_optimizer, hooks=hooks,
                    criterion=dp_criterion)
    return dp_optimizer, loader, state


class _UnsizedBatchSplittingSampler(BatchSplittingSampler):
    """Opacus' splitter without ``__len__``: Poisson batches make the count random, and
    Lightning would cut an epoch after ``len(loader)`` batches (dropping the end of a logical
    batch and leaving stale skip flags); unsized, Lightning runs until the sampler ends."""

    def __len__(self) -> int:
        raise TypeError("the number of physical batches is random under Poisson sampling")


def physical_batches(loader: DataLoader, max_physical_batch_size: int,
                     optimizer: DPOptimizer) -> DataLoader:
    """Split ``loader``'s logical batches into physical batches of at most the given size.

    Same mechanism as Opacus' ``BatchMemoryManager``: per physical batch the sampler queues a
    skip/step flag in the optimizer, which steps once per logical batch. The flags form a FIFO
    in sampling order, so Lightning's one-batch prefetch keeps them in sync.
    """
    sampler = _UnsizedBatchSplittingSampler(sampler=loader.batch_sampler,
                                            max_batch_size=max_physical_batch_size,
                                            optimizer=optimizer)
    return DataLoader(loader.dataset, batch_sampler=sampler, num_workers=loader.num_workers,
                      collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
                      generator=loader.generator)


@contextmanager
def private_training(module: L.LightningModule, train_loader: DataLoader,
                     plan: DPPlan) -> Iterator[tuple[DataLoader, DPState]]:
    """Make ``module`` (a ``ClassifierModule``) train with DP-SGD inside the ``with`` block.

    Builds the module's own optimizer (``module.build_optimizer``), makes it private, sets
    ``module.external_optimizer`` and yields ``(physical_batch_loader, state)``: train with
    that loader for ``plan.epochs`` epochs. On exit the hooks are removed and the optimizer
    hook unset; ``state.epsilon()`` keeps working. ``module.net`` keeps its identity and keys.
    """
    if plan.grad_sample_mode == "ghost":
        raise ValueError(
            "grad_sample_mode='ghost' needs Opacus' two-pass criterion and cannot "
            "drive a LightningModule's training_step; use 'hooks' (or make_private directly)"
        )
    if getattr(module, "batch_transform", None) is not None:
        raise ValueError(
            "DP training with a batch_transform (e.g. adversarial training) is not supported: "
            "its extra forward/backward passes would corrupt the per-sample gradients"
        )
    if getattr(module, "external_optimizer", None) is not None:
        raise ValueError("module already has an external_optimizer (nested private_training?)")
    if not hasattr(module, "build_optimizer"):
        raise TypeError(f"{type(module).__name__} has no build_optimizer(params) method")
    net: nn.Module = module.net  # type: ignore[assignment]
    base_optimizer = module.build_optimizer(net.parameters())
    optimizer, loader, state = make_private(net, base_optimizer, train_loader, plan)
    module.external_optimizer = optimizer
    try:
        yield physical_batches(loader, plan.max_physical_batch_size, optimizer), state
    finally:
        module.external_optimizer = None
        state.hooks.cleanup()


class EpsilonLogger(L.Callback):
    """Record epsilon spent after every training epoch (``epsilons``), also as ``epsilon`` in
    the epoch's record of ``pl_module.history`` (if any: per-epoch loggers such as MLflow's
    and the history CSV carry it; put this callback before them) and, with ``log``, through
    ``log("epsilon")``."""

    def __init__(self, state: DPState, log: bool = True) -> None:
        self.state = state
        self.log = log
        self.epsilons: list[float] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        eps = self.state.epsilon()
        self.epsilons.append(eps)
        history = getattr(pl_module, "history", [])
        if history and int(history[-1]["epoch"]) == trainer.current_epoch:
            history[-1]["epsilon"] = eps
        if self.log:
            pl_module.log("epsilon", eps)
