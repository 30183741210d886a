"""The attack stage's core: run the configured suite of evasion attacks against one classifier.

:func:`run_suite` attacks the first ``attack.n_examples`` test images with every configured
attack at every epsilon (:func:`medsec.metrics.robustness.run_attack`), then derives

- the worst case per linf epsilon: an example counts as robust only if it is classified
  correctly before and after *every* linf attack at that epsilon;
- gradient-masking flags (robust accuracy rising with epsilon, black-box beating white-box);
- transfer results: the listed attacks crafted on a surrogate model, scored on the victim;
- the image-scaling attack on a ``resize -> classifier`` pipeline.

No Prefect, no MLflow: the flow (``flows/attack.py``) logs and writes what this returns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from medsec.attacks.base import Attack
from medsec.attacks.config import (
    AttackConfig,
    AttackSpec,
    ImageScalingConfig,
    grey_levels,
    resolve_params,
)
from medsec.attacks.dataset import TIMING_METRICS
from medsec.attacks.image_scaling import ImageScalingAttack, ResizeThenClassify, resize
from medsec.attacks.registry import attack_params, build_attack
from medsec.attacks.transfer import transfer_evaluate
from medsec.attacks.uap import UAP
from medsec.data.types import ImageDataset
from medsec.errors import ConfigError
from medsec.metrics.robustness import run_attack
from medsec.models.checks import check_classifier
from medsec.training.predict import predict_logits

if TYPE_CHECKING:
    from medsec.config import MedSecConfig
    from medsec.data.types import LoadedDataset


Log = Callable[[str], None]


def point_key(eps: float | None) -> str:
    """``eps<k>`` (k = grey levels) for a budget, ``unbounded`` for none."""
    return "unbounded" if eps is None else f"eps{grey_levels(eps)}"


@dataclass
class AttackPoint:
    """One attack at one epsilon over the attacked examples.

    ``adversarial`` float32 (N, C, H, W) in [0, 1]; ``adv_pred`` (N,) the victim's predictions
    on it; ``targets`` (N,) for targeted attacks; ``params`` the resolved constructor
    parameters; ``metrics`` those of :func:`medsec.metrics.robustness.evaluate_attack` (plus
    ``fooling_rate``, ``fit_fooling_rate`` and ``fit_seconds`` for UAP).
    """

    spec: AttackSpec
    eps: float | None
    norm: str
    params: dict[str, Any]
    metrics: dict[str, float]
    adversarial: np.ndarray
    adv_pred: np.ndarray
    targets: np.ndarray | None = None

    @property
    def key(self) -> str:
        return point_key(self.eps)

    @property
    def name(self) -> str:
        """``<spec id>_<key>``, e.g. ``pgd_eps8``: file stem and metric prefix."""
        return f"{self.spec.id}_{self.key}"

    @property
    def step(self) -> int:
        """MLflow step: the epsilon in grey levels (0 when unbounded)."""
        return 0 if self.eps is None else grey_levels(self.eps)


@dataclass
class ScalingDemo:
    """Image-scaling attack results: large ``source``/``adversarial`` (n, C, S, S), the
    ``target`` and the pipeline's ``downscaled`` view (n, C, h, w), labels and predictions."""

    metrics: dict[str, float]
    source: np.ndarray
    adversarial: np.ndarray
    target: np.ndarray
    downscaled: np.ndarray
    source_labels: np.ndarray
    target_labels: np.ndarray
    pred: np.ndarray
    source_indices: np.ndarray
    target_indices: np.ndarray


@dataclass
class SuiteResult:
    """Everything the attack stage reports. ``images`` (N, C, H, W), ``labels``/``indices``/
    ``clean_pred`` (N,) describe the attacked test examples."""

    images: np.ndarray
    labels: np.ndarray
    indices: np.ndarray
    clean_pred: np.ndarray
    points: list[AttackPoint] = field(default_factory=list)
    worst_case: list[dict[str, Any]] = field(default_factory=list)
    masking_flags: list[str] = field(default_factory=list)
    transfer: list[dict[str, Any]] = field(default_factory=list)
    image_scaling: ScalingDemo | None = None

    @property
    def clean_acc(self) -> float:
        return float((self.clean_pred == self.labels).mean())

    def metrics(self, timings: bool = False) -> dict[str, float]:
        """Flat lower_snake_case metrics: ``clean_acc``, ``<attack>_eps<k>_robust_acc``, ...,
        ``worst_case_eps<k>_robust_acc``, ``transfer_<attack>_eps<k>_victim_robust_acc``,
        ``image_scaling_success_rate``; wall-clock numbers only with ``timings``."""
        out: dict[str, float] = {
            "clean_acc": self.clean_acc,
            "n_examples": float(len(self.labels)),
            "gradient_masking_flags": float(len(self.masking_flags)),
        }
        for point in self.points:
            out.update(_prefixed(point.name, point.metrics, timings))
        for row in self.worst_case:
            key = point_key(row["eps"])
            out[f"worst_case_{key}_robust_acc"] = row["robust_acc"]
            out[f"worst_case_{key}_attack_success_rate"] = row["attack_success_rate"]
        for row in self.transfer:
            values = {k: v for k, v in row.items() if isinstance(v, float) and k != "eps"}
            out.update(
                _prefixed(f"transfer_{row['attack']}_{point_key(row['eps'])}", values, timings)
            )
        if self.image_scaling is not None:
            out.update(_prefixed("image_scaling", self.image_scaling.metrics, timings))
        return out

    def curve_rows(self) -> list[dict[str, Any]]:
        """Robustness curve: rows ``{attack, eps, robust_acc, norm}`` (eps in pixel units of
        the norm; eps 0 is the clean accuracy) for every eps-bounded attack and the linf
        worst case."""
        rows: list[dict[str, Any]] = []
        seen: set[str] = set()
        for point in self.points:
            if point.eps is None:
                continue
            if point.spec.id not in seen:
                seen.add(point.spec.id)
                rows.append(
                    {
                        "attack": point.spec.id,
                        "eps": 0.0,
                        "robust_acc": self.clean_acc,
                        "norm": point.norm,
                    }
                )
            rows.append(
                {
                    "attack": point.spec.id,
                    "eps": point.eps,
                    "robust_acc": point.metrics["robust_acc"],
                    "norm": point.norm,
                }
            )
        if self.worst_case:
            rows.append(
                {"attack": "worst_case", "eps": 0.0, "robust_acc": self.clean_acc, "norm": "linf"}
            )
            rows += [
                {
                    "attack": "worst_case",
                    "eps": r["eps"],
                    "robust_acc": r["robust_acc"],
                    "norm": "linf",
                }
                for r in self.worst_case
            ]
        return rows


def _prefixed(prefix: str, metrics: dict[str, float], timings: bool) -> dict[str, float]:
    return {
        f"{prefix}_{k}": float(v)
        for k, v in metrics.items()
        if (timings or k not in TIMING_METRICS) and k not in ("n_examples", "clean_acc")
    }


# --------------------------------------------------------------------------- checks


def check_surrogate(cfg: MedSecConfig) -> None:
    """ConfigError if the configured surrogate would be the victim itself (same model, norm
    and seed: that is a white-box attack, not a transfer)."""
    transfer = cfg.attack.transfer
    if transfer is None:
        return
    s = transfer.surrogate
    if (s.model, s.norm, s.seed) == (cfg.model.name, cfg.model.norm, cfg.seed):
        raise ConfigError(
            f"attack.transfer.surrogate: model {s.model!r}, norm {s.norm!r} and seed {s.seed} "
            "are the victim's own: change surrogate.seed or surrogate.model"
        )


# --------------------------------------------------------------------------- pieces


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


def _run_point(
    spec: AttackSpec,
    eps: float | None,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    cfg: AttackConfig,
    num_classes: int,
    train: ImageDataset | None,
) -> AttackPoint:
    attack, resolved = build_point_attack(spec, eps, model, cfg.seed)
    extra: dict[str, float] = {}
    if isinstance(attack, UAP):
        if train is None:
            raise ValueError("uap needs training images to fit on (pass `train`)")
        fit = train.head(cfg.uap_fit_size)
        x_fit, y_fit = fit.tensors()
        attack.fit(x_fit, y_fit)
        assert attack.last_stats is not None
        extra = {
            "fit_fooling_rate": float(attack.fooling_rate or 0.0),
            "fit_seconds": attack.last_stats.seconds,
            "fit_size": float(len(fit)),
        }
    targets = (y + 1) % num_classes if spec.targeted else None
    outcome = run_attack(model, attack, x, y, cfg.batch_size, targets)
    metrics = dict(outcome.metrics) | extra
    if isinstance(attack, UAP):
        metrics["fooling_rate"] = attack.fooling_rate_on(x)
    return AttackPoint(
        spec=spec,
        eps=eps,
        norm=str(resolved.get("norm", "l0")),
        params=resolved,
        metrics=metrics,
        adversarial=outcome.adversarial.numpy().astype(np.float32),
        adv_pred=outcome.adv_pred.numpy(),
        targets=None if targets is None else targets.numpy(),
    )


def transfer_spec(spec: AttackSpec) -> AttackSpec:
    """The spec as crafted on the surrogate: without early stopping unless the config sets
    it (an example that only just crosses the surrogate's boundary rarely transfers; the
    full budget is spent, as in Madry et al.)."""
    if "early_stop" in attack_params(spec.name) and "early_stop" not in spec.params:
        return spec.model_copy(update={"params": spec.params | {"early_stop": False}})
    return spec


def worst_case(
    points: list[AttackPoint], labels: np.ndarray, clean_pred: np.ndarray
) -> list[dict[str, Any]]:
    """Per linf epsilon: robust = correct before and after every attack at that epsilon."""
    correct = clean_pred == labels
    by_eps: dict[float, list[AttackPoint]] = {}
    for point in points:
        if point.eps is not None and point.norm == "linf":
            by_eps.setdefault(point.eps, []).append(point)
    rows = []
    for eps in sorted(by_eps):
        robust = correct.copy()
        for point in by_eps[eps]:
            robust &= point.adv_pred == labels
        n_correct = int(correct.sum())
        rows.append(
            {
                "eps": eps,
                "robust_acc": float(robust.mean()),
                "attack_success_rate": float((correct & ~robust).sum()) / n_correct
                if n_correct
                else 0.0,
                "attacks": [p.spec.id for p in by_eps[eps]],
            }
        )
    return rows


GRADIENT_ATTACKS = ("fgsm", "bim", "pgd", "mim", "apgd", "cw", "deepfool")
BLACK_BOX_ATTACKS = ("square", "one_pixel")


def masking_flags(points: list[AttackPoint], n_examples: int) -> list[str]:
    """Signs of gradient masking (design doc): robust accuracy that rises with epsilon, and a
    black-box attack stronger than every gradient attack at the same norm and epsilon. A
    difference must exceed one example to count. Targeted attacks and UAP are left out."""
    tol = 1.0 / max(n_examples, 1)
    flags: list[str] = []
    untargeted = [p for p in points if not p.spec.targeted and p.spec.name != "uap"]
    by_id: dict[str, list[AttackPoint]] = {}
    for p in untargeted:
        if p.eps is not None:
            by_id.setdefault(p.spec.id, []).append(p)
    for ident, pts in by_id.items():
        pts = sorted(pts, key=lambda p: p.eps or 0.0)
        for lo, hi in zip(pts, pts[1:], strict=False):
            a, b = lo.metrics["robust_acc"], hi.metrics["robust_acc"]
            if b > a + tol:
                flags.append(
                    f"{ident}: robust_acc rises from {a:.3f} ({lo.key}) to {b:.3f} ({hi.key})"
                )
    groups: dict[tuple[str, float], list[AttackPoint]] = {}
    for p in untargeted:
        if p.eps is not None:
            groups.setdefault((p.norm, p.eps), []).append(p)
    for (norm, eps), pts in groups.items():
        white = [p.metrics["robust_acc"] for p in pts if p.spec.name in GRADIENT_ATTACKS]
        black = [p for p in pts if p.spec.name in BLACK_BOX_ATTACKS]
        if white and black:
            best = min(black, key=lambda p: p.metrics["robust_acc"])
            if best.metrics["robust_acc"] < min(white) - tol:
                flags.append(
                    f"black-box {best.spec.id} ({best.metrics['robust_acc']:.3f}) "
                    f"beats every gradient attack ({min(white):.3f}) at {norm} "
                    f"{point_key(eps)}"
                )
    return flags


def scaling_demo(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    clean_pred: Tensor,
    cfg: ImageScalingConfig,
) -> ScalingDemo | None:
    """Image-scaling attack on ``resize(mode) -> model``: test images upscaled to
    ``source_size`` are perturbed to downscale into a correctly classified test image of
    another class. None when the test examples hold no such pair."""
    native = tuple(int(s) for s in images.shape[2:])
    if cfg.source_size <= max(native):
        raise ValueError(
            f"attack.image_scaling.source_size={cfg.source_size} must exceed the model's "
            f"input size {native}"
        )
    correct = (clean_pred == labels).nonzero().squeeze(1)
    sources, targets = [], []
    for i in correct.tolist():
        others = correct[labels[correct] != labels[i]]
        if others.numel():
            sources.append(i)
            targets.append(int(others[len(sources) % others.numel()]))
        if len(sources) == cfg.n_examples:
            break
    if not sources:
        return None
    src_idx, tgt_idx = torch.tensor(sources), torch.tensor(targets)
    source = resize(images[src_idx], cfg.source_size, "bilinear").clamp(0.0, 1.0)
    target = images[tgt_idx]
    attack = ImageScalingAttack(size=native, mode=cfg.mode, steps=cfg.steps)
    result = attack(source, target)
    pipeline = ResizeThenClassify(model, native, cfg.mode)
    pred = predict_logits(pipeline, result.adv).argmax(1)
    source_pred = predict_logits(pipeline, source).argmax(1)
    metrics = result.as_dict() | {
        "n_pairs": float(len(sources)),
        "success_rate": float((pred == labels[tgt_idx]).float().mean()),
        "pipeline_clean_acc": float((source_pred == labels[src_idx]).float().mean()),
        "source_size": float(cfg.source_size),
    }
    return ScalingDemo(
        metrics=metrics,
        source=source.numpy(),
        adversarial=result.adv.float().numpy(),
        target=target.numpy(),
        downscaled=attack.downscale(result.adv).float().numpy(),
        source_labels=labels[src_idx].numpy(),
        target_labels=labels[tgt_idx].numpy(),
        pred=pred.numpy(),
        source_indices=src_idx.numpy(),
        target_indices=tgt_idx.numpy(),
    )


# --------------------------------------------------------------------------- the suite


def run_suite(
    model: nn.Module,
    test: ImageDataset,
    cfg: AttackConfig,
    train: ImageDataset | None = None,
    surrogate: nn.Module | None = None,
    log: Log | None = None,
) -> SuiteResult:
    """Run the configured suite on the first ``cfg.n_examples`` images of ``test``.

    Args:
        model: the victim, pixel-space images (N, C, H, W) in [0, 1] -> logits (N, K).
        test: test split (images float32 (N, C, H, W) in [0, 1], labels (N,)).
        cfg: the ``attack:`` config section.
        train: training split (needed by ``uap``, fitted on its first ``uap_fit_size``).
        surrogate: model the ``transfer`` attacks are crafted on (needed when configured).
        log: progress callback, one line per attack and epsilon.

    Raises ValueError with the attack core's message for a model that returns probabilities
    or a dense output, images outside [0, 1] or labels outside the model's classes.
    """
    say = log or (lambda _msg: None)
    subset = test.head(cfg.n_examples)
    x, y = (torch.from_numpy(np.ascontiguousarray(a)) for a in (subset.images, subset.labels))
    num_classes = check_classifier(model, x, y)
    if cfg.transfer is not None and surrogate is None:
        raise ValueError("attack.transfer is configured: pass the trained surrogate model")
    clean_pred = predict_logits(model, x, cfg.batch_size).argmax(1)
    result = SuiteResult(
        images=subset.images,
        labels=subset.labels,
        indices=np.arange(len(subset), dtype=np.int64),
        clean_pred=clean_pred.numpy(),
    )
    say(f"{len(subset)} test images, clean accuracy {result.clean_acc:.3f}")
    for spec in cfg.attacks:
        for eps in spec.eps or (None,):
            point = _run_point(spec, eps, model, x, y, cfg, num_classes, train)
            result.points.append(point)
            m = point.metrics
            say(
                f"{point.name}: robust_acc {m['robust_acc']:.3f}, "
                f"success {m['attack_success_rate']:.3f}, {m['seconds_per_image'] * 1e3:.1f} "
                "ms/image"
            )
    result.worst_case = worst_case(result.points, result.labels, result.clean_pred)
    result.masking_flags = masking_flags(result.points, len(subset))
    for flag in result.masking_flags:
        say(f"gradient masking? {flag}")
    if cfg.transfer is not None:
        assert surrogate is not None
        check_classifier(surrogate, x, y)
        specs = {spec.id: spec for spec in cfg.attacks}
        for ident in cfg.transfer.attacks:
            spec = transfer_spec(specs[ident])
            for eps in spec.eps:
                attack, _ = build_point_attack(spec, eps, surrogate, cfg.seed)
                row = transfer_evaluate(attack, model, x, y, cfg.batch_size)
                result.transfer.append({"attack": ident, "eps": eps, **row})
                say(
                    f"transfer {ident}_{point_key(eps)}: victim robust_acc "
                    f"{row['victim_robust_acc']:.3f}"
                )
    if cfg.image_scaling.enabled:
        result.image_scaling = scaling_demo(model, x, y, clean_pred, cfg.image_scaling)
        if result.image_scaling is not None:
            say(f"image scaling: success {result.image_scaling.metrics['success_rate']:.3f}")
    return result


def train_surrogate(cfg: MedSecConfig, data: LoadedDataset) -> nn.Module:
    """Train the transfer surrogate through the project's training path
    (:func:`medsec.training.job.train_classifier`) with ``attack.transfer.surrogate``'s model,
    norm, epochs and seed, without DP; returns the network in eval mode."""
    from medsec.training.job import train_classifier  # Lightning: imported only when used

    transfer = cfg.attack.transfer
    if transfer is None:
        raise ValueError("attack.transfer is not configured")
    check_surrogate(cfg)
    s = transfer.surrogate
    update: dict[str, Any] = {
        "seed": s.seed,
        "model": cfg.model.model_copy(update={"name": s.model, "norm": s.norm}),
        "train": cfg.train.model_copy(update={"epochs": s.epochs}),
    }
    if cfg.privacy.dp.enabled:
        update["privacy"] = cfg.privacy.model_copy(
            update={"dp": cfg.privacy.dp.model_copy(update={"enabled": False})}
        )
    trained = train_classifier(cfg.model_copy(update=update), data)
    return trained.model.eval()
