"""Run one configured attack spec: build it at each of its budgets on the victim, attack the
suite's examples and score them (:func:`medsec.attacks.scoring.run_attack`) -> one
:class:`AttackPoint` per budget. Also the transfer of a spec crafted on a surrogate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from torch import nn

from medsec.attacks.base import Attack
from medsec.attacks.config import AttackConfig, AttackSpec, resolve_params
from medsec.attacks.registry import attack_params, build_attack
from medsec.attacks.results import AttackPoint, SuiteResult, point_key
from medsec.attacks.scoring import run_attack
from medsec.attacks.transfer import transfer_evaluate
from medsec.attacks.uap import UAP
from medsec.data.types import ImageDataset

Log = Callable[[str], None]


def quiet(_msg: str) -> None:
    """A progress callback that says nothing."""


def build_point_attack(
    spec: AttackSpec, eps: float | None, model: nn.Module, seed: int
) -> tuple[Attack, dict[str, Any]]:
    """The attack of ``spec`` at ``eps`` on ``model``; also its resolved parameters."""
    defaults = attack_params(spec.name)
    params = resolve_params(spec.params, eps)
    if "seed" in defaults:
        params.setdefault("seed", seed)
    if eps is not None:
        params["eps"] = eps
    if spec.targeted:
        params["targeted"] = True
    attack = build_attack(spec.name, model, **params)
    resolved = {k: v for k, v in (defaults | params).items() if not callable(v)}
    return attack, resolved


def run_point(spec: AttackSpec, eps: float | None, model: nn.Module, suite: SuiteResult,
              cfg: AttackConfig, train: ImageDataset | None = None) -> AttackPoint:
    """``spec`` at ``eps`` against ``model`` on the examples of ``suite`` (targets of a
    targeted spec: ``(label + 1) mod K``); a ``uap`` is first fitted on the first
    ``cfg.uap_fit_size`` images of ``train``."""
    x, y = suite.tensors()
    attack, resolved = build_point_attack(spec, eps, model, cfg.seed)
    extra: dict[str, float] = {}
    if isinstance(attack, UAP):
        if train is None:
            raise ValueError("uap needs training images to fit on (pass `train`)")
        fit = train.head(cfg.uap_fit_size)
        x_fit, y_fit = fit.tensors()
        attack.fit(x_fit, y_fit)
        assert attack.last_stats is not None
        extra = {"fit_fooling_rate": float(attack.fooling_rate or 0.0),
                 "fit_seconds": attack.last_stats.seconds, "fit_size": float(len(fit))}
    targets = (y + 1) % suite.num_classes if spec.targeted else None
    outcome = run_attack(model, attack, x, y, cfg.batch_size, targets)
    metrics = dict(outcome.metrics) | extra
    if isinstance(attack, UAP):
        metrics["fooling_rate"] = attack.fooling_rate_on(x)
    return AttackPoint(spec, eps, attack.norm, resolved, metrics,
                       outcome.adversarial.numpy().astype(np.float32), outcome.adv_pred.numpy(),
                       None if targets is None else targets.numpy())


def run_spec(spec: AttackSpec, model: nn.Module, suite: SuiteResult, cfg: AttackConfig,
             train: ImageDataset | None = None, log: Log = quiet) -> list[AttackPoint]:
    """``spec`` at each of its budgets (once, unbounded, when it has none), in order."""
    points = []
    for eps in spec.eps or (None,):
        point = run_point(spec, eps, model, suite, cfg, train)
        points.append(point)
        m = point.metrics
        log(f"{point.name}: robust_acc {m['robust_acc']:.3f}, success "
            f"{m['attack_success_rate']:.3f}, {m['seconds_per_image'] * 1e3:.1f} ms/image")
    return points


def transfer_spec(spec: AttackSpec) -> AttackSpec:
    """The spec as crafted on the surrogate: without early stopping unless the config sets
    it (an example that only just crosses the surrogate's boundary rarely transfers; the
    full budget is spent, as in Madry et al.)."""
    if "early_stop" in attack_params(spec.name) and "early_stop" not in spec.params:
        return spec.model_copy(update={"params": spec.params | {"early_stop": False}})
    return spec


def run_transfer(spec: AttackSpec, model: nn.Module, surrogate: nn.Module, suite: SuiteResult,
                 cfg: AttackConfig, log: Log = quiet) -> list[dict[str, Any]]:
    """``spec`` crafted on ``surrogate`` at each budget and scored on the victim ``model``:
    rows ``{attack, eps, **transfer_evaluate(...)}``."""
    x, y = suite.tensors()
    spec, rows = transfer_spec(spec), []
    for eps in spec.eps:
        attack, _ = build_point_attack(spec, eps, surrogate, cfg.seed)
        row = transfer_evaluate(attack, model, x, y, cfg.batch_size)
        rows.append({"attack": spec.id, "eps": eps, **row})
        acc = row["victim_robust_acc"]
        log(f"transfer {spec.id}_{point_key(eps)}: victim robust_acc {acc:.3f}")
    return rows
