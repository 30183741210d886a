"""One-run DP auditing (Steinke, Nasr and Jagielski 2023, "Privacy Auditing with One (1)
Training Run") with white-box Dirac gradient canaries.

Procedure (the paper's Algorithm 1 with gradient canaries, its strongest white-box setting):

1. ``m`` canaries, each included independently with probability 1/2 (``included``).
2. One training run. Canary ``i`` owns one parameter coordinate ``c_i``; at every optimizer
   step an included canary is Poisson-sampled with the run's sample rate ``q`` (like any
   training record) and, when sampled, contributes the per-example gradient
   ``max_grad_norm * e_{c_i}`` (a Dirac vector of norm C). Under DP-SGD the row goes through
   Opacus' own clipping, noise and scaling (:class:`CanaryCallback` patches the DP
   optimizer's ``clip_and_accumulate`` to append the rows), so the mechanism audited is the
   project's DP-SGD, unchanged. Without DP the canary adds ``C e_{c_i} / B`` to the mean
   gradient (B the batch size).
3. Score ``s_i = theta_0[c_i] - theta_T[c_i]`` (descent moves a coordinate against its
   gradient, so included canaries score high).
4. Guess "in" for the ``k+`` highest scores, "out" for the ``k-`` lowest, abstain on the rest;
   ``r = k+ + k-`` guesses, ``v`` correct.
5. :func:`epsilon_lower_bound`: the largest epsilon whose (eps, delta)-DP null hypothesis is
   rejected at level ``1 - confidence`` by ``v`` correct out of ``r`` (the paper's Theorem 5.2
   and its reference code: the tail of Binomial(r, e^eps / (1 + e^eps)) plus the delta term
   ``2 m delta max_i P[v > Bin >= v - i] / i``, inverted by bisection).

With several ``(k+, k-)`` the confidence is split among them (Bonferroni), so reporting the
largest bound is still a valid lower bound at the stated confidence.

Input canaries (:class:`InputCanaries`, the paper's black-box setting): ``m`` crafted
examples (binary-noise images, far from any medical image, each with a random label), each
added to the training split with probability 1/2, trained on like any record (the same
sampling, clipping and noise: nothing in the training path knows about them); after training
canary ``i`` scores ``-loss_i`` (lower loss = guess "in") and steps 4-5 are the same. Weaker
than gradient canaries (the model must memorise a canary for it to stand out), so their bound
is a lower bound on what the gradient canaries can prove; what they audit is the whole
pipeline from the data loader on.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from scipy import stats
from torch import nn

# --------------------------------------------------------------------------- the bound


def p_value_dp_audit(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """P[an (eps, delta)-DP run lets an auditor make >= v correct guesses out of r] (upper
    bound, Steinke et al. 2023, Theorem 5.2), for m canaries each included with prob. 1/2.

    ``beta = P[Binomial(r, q) >= v]`` with ``q = e^eps / (1 + e^eps)`` (randomised response),
    plus ``2 m delta * max_{1<=i<=v} P[v > Binomial(r, q) >= v - i] / i``; capped at 1.
    """
    if not 0 <= v <= r <= m:
        raise ValueError(f"need 0 <= v <= r <= m, got v={v}, r={r}, m={m}")
    if eps < 0 or not 0 <= delta <= 1:
        raise ValueError(f"need eps >= 0 and delta in [0, 1], got eps={eps}, delta={delta}")
    q = 1.0 / (1.0 + math.exp(-eps))
    beta = float(stats.binom.sf(v - 1, r, q))
    alpha = 0.0
    if v > 0 and delta > 0:
        # cumulative P[Bin = v-1], P[Bin in {v-1, v-2}], ... divided by i = 1..v: the paper's
        # loop keeps the running maximum of these ratios
        pmf = stats.binom.pmf(np.arange(v - 1, -1, -1), r, q)
        alpha = float(np.max(np.cumsum(pmf) / np.arange(1, v + 1)))
    return min(beta + alpha * delta * 2 * m, 1.0)


def epsilon_lower_bound(m: int, r: int, v: int, delta: float, confidence: float = 0.95,
                        iterations: int = 40) -> float:
    """Largest epsilon rejected at level ``1 - confidence`` (>= 0; 0 = nothing rejected):
    the run is not (eps, delta)-DP for any eps below it, with probability ``confidence``.

    Bisection as in the paper's ``get_eps_audit``: ``p_value(eps_min) < p <= p_value(eps_max)``.
    """
    p = 1.0 - confidence
    if not 0 < p < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if p_value_dp_audit(m, r, v, 0.0, delta) >= p:
        return 0.0
    lo, hi = 0.0, 1.0
    while p_value_dp_audit(m, r, v, hi, delta) < p:
        lo, hi = hi, hi * 2
        if hi > 1e4:  # r correct guesses of r cannot reject eps ~ log(r): never reached
            return lo
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if p_value_dp_audit(m, r, v, mid, delta) < p:
            lo = mid
        else:
            hi = mid
    return lo


@dataclass(frozen=True)
class Guess:
    """One guessing rule: ``k_pos`` "in" guesses (highest scores), ``k_neg`` "out" guesses
    (lowest), ``correct`` of them right, and its lower bound at the split confidence."""

    k_pos: int
    k_neg: int
    correct: int
    epsilon_lower: float

    @property
    def guesses(self) -> int:
        return self.k_pos + self.k_neg


def count_correct(scores: np.ndarray, included: np.ndarray, k_pos: int, k_neg: int) -> int:
    """Correct guesses when the ``k_pos`` highest ``scores`` are guessed in and the ``k_neg``
    lowest out (ties broken by index; ``scores`` (m,) float, ``included`` (m,) bool)."""
    if k_pos + k_neg > len(scores):
        raise ValueError(f"k_pos + k_neg = {k_pos + k_neg} guesses exceed m = {len(scores)}")
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    inc = np.asarray(included, dtype=bool)[order]
    return int(inc[:k_pos].sum() + (~inc[len(inc) - k_neg:]).sum())


@dataclass(frozen=True)
class CanaryAudit:
    """Result of a one-run audit: ``epsilon_audit_lower`` (the largest valid lower bound
    over ``guesses`` at ``confidence``) beside the accountant's ``epsilon`` (inf: not
    private), at ``delta``; ``num_canaries`` m, ``num_included``; per-rule detail in
    ``guesses``; ``scores``/``included`` per canary; ``inserted``: canary gradients the run
    received (a run that received none proves nothing)."""

    epsilon_audit_lower: float
    epsilon: float
    delta: float
    confidence: float
    num_canaries: int
    num_included: int
    guesses: tuple[Guess, ...]
    scores: np.ndarray = field(repr=False)
    included: np.ndarray = field(repr=False)
    inserted: int | None = None  # canary gradients put into the run (None: scores given)
    kind: str = "gradient"  # "gradient" (Dirac gradient canaries) or "input" (crafted images)

    @property
    def best(self) -> Guess:
        return max(self.guesses, key=lambda g: g.epsilon_lower)

    def metrics(self) -> dict[str, float]:
        """Headline numbers (MLflow / ``metrics/``); epsilon inf -> NaN (written as null)."""
        best = self.best
        return {"epsilon_audit_lower": self.epsilon_audit_lower,
                "epsilon": self.epsilon if math.isfinite(self.epsilon) else float("nan"),
                "delta": self.delta, "audit_num_canaries": float(self.num_canaries),
                "audit_num_guesses": float(best.guesses),
                "audit_correct_guesses": float(best.correct)}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready detail (one row per guessing rule)."""
        return {"epsilon_audit_lower": self.epsilon_audit_lower,
                "epsilon": self.epsilon if math.isfinite(self.epsilon) else None,
                "delta": self.delta, "confidence": self.confidence,
                "num_canaries": self.num_canaries, "num_included": self.num_included,
                "inserted": self.inserted, "kind": self.kind,
                "guesses": [{"k_pos": g.k_pos, "k_neg": g.k_neg, "correct": g.correct,
                             "epsilon_lower": g.epsilon_lower} for g in self.guesses]}


def audit_scores(scores: np.ndarray, included: np.ndarray, delta: float,
                 guesses: Sequence[float | tuple[int, int]] = (0.05, 0.1, 0.25),
                 confidence: float = 0.95, epsilon: float = math.inf) -> CanaryAudit:
    """Lower bound on epsilon from canary ``scores`` (m,) (high = "in") and the truth
    ``included`` (m,) bool.

    ``guesses``: fractions f (``k+ = k- = round(f m)``) or explicit ``(k+, k-)`` pairs; with
    G rules each is tested at level ``(1 - confidence) / G``, so the maximum is a valid
    bound at ``confidence``. ``delta``: the delta the run claims (its accountant's).
    """
    scores = np.asarray(scores, dtype=np.float64)
    included = np.asarray(included, dtype=bool)
    m = len(scores)
    if m != len(included) or m == 0:
        raise ValueError(f"scores ({m}) and included ({len(included)}) must match, m > 0")
    if not np.isfinite(scores).all():
        raise ValueError("canary scores must be finite (the run diverged?)")
    rules = [(max(1, round(g * m)),) * 2 if isinstance(g, float) else tuple(g) for g in guesses]
    level = 1.0 - (1.0 - confidence) / len(rules)
    out = []
    for k_pos, k_neg in rules:
        v = count_correct(scores, included, k_pos, k_neg)
        out.append(Guess(k_pos, k_neg, v,
                         epsilon_lower_bound(m, k_pos + k_neg, v, delta, level)))
    bound = max(g.epsilon_lower for g in out)
    return CanaryAudit(bound, float(epsilon), float(delta), confidence, m, int(included.sum()),
                       tuple(out), scores, included)


# --------------------------------------------------------------------------- gradient canaries

PLAIN_MAGNITUDE = 10.0
"""Canary gradient norm in a run without clipping: nothing bounds a record's gradient there,
so the auditor may pick it as large as it likes (strong canaries)."""


def _resolve(module: nn.Module, path: str) -> nn.Module:
    for name in filter(None, path.split(".")):
        module = getattr(module, name)
    return module


def _dp_optimizer(pl_module: L.LightningModule) -> Any:
    """The module's Opacus DP optimizer (classifier: ``external_optimizer``; GAN:
    ``external_d_optimizer``), or None for a plain run."""
    for name in ("external_optimizer", "external_d_optimizer"):
        opt = getattr(pl_module, name, None)
        if opt is not None and hasattr(opt, "clip_and_accumulate"):
            return opt
    return None


def _sample_rate(trainer: L.Trainer) -> float:
    """Poisson rate of the run's loader (Opacus' sampler), else 1 / batches per epoch."""
    loader = trainer.train_dataloader
    batch_sampler = getattr(loader, "batch_sampler", None)
    for candidate in (batch_sampler, getattr(batch_sampler, "sampler", None)):
        rate = getattr(candidate, "sample_rate", None)
        if rate is not None:
            return float(rate)
    batches = trainer.num_training_batches
    if not batches or not math.isfinite(batches):
        raise ValueError("cannot tell the run's sample rate: pass sample_rate")
    return 1.0 / float(batches)


class CanaryCallback(L.Callback):
    """Insert ``num_canaries`` Dirac gradient canaries into one Lightning training run.

    ``target``: dotted attribute of the LightningModule whose parameters hold the canary
    coordinates ("net" for the classifier; "discriminator" for the GAN) when the run is not
    private; under DP-SGD the coordinates are drawn among the DP optimizer's parameters (the
    network Opacus clips). ``magnitude`` None = the DP optimizer's ``max_grad_norm``
    (:data:`PLAIN_MAGNITUDE` for a plain run). ``sample_rate`` None = read from the run's
    loader. Coordinates (distinct) and inclusion (probability 1/2) come from ``seed``;
    per-step sampling from ``seed + 1``.
    After training, :meth:`scores` gives ``theta_0 - theta_T`` per canary.
    """

    def __init__(self, num_canaries: int, seed: int = 0, target: str = "net",
                 magnitude: float | None = None, sample_rate: float | None = None) -> None:
        self.m = int(num_canaries)
        self.seed = int(seed)
        self.target = target
        self.magnitude = magnitude
        self.sample_rate = sample_rate
        gen = np.random.default_rng(self.seed)
        self.included = gen.random(self.m) < 0.5
        self._step_gen = torch.Generator().manual_seed(self.seed + 1)
        self._params: list[nn.Parameter] = []
        self._where: list[tuple[int, int]] = []  # (param index, flat index) per canary
        self._initial: np.ndarray | None = None
        self._dp: Any = None
        self._expected_batch = 1.0
        self.steps = 0  # optimizer steps that saw canary sampling
        self.samples = 0  # canary gradients inserted in total

    # ---- set-up
    def setup_params(self, params: Sequence[nn.Parameter]) -> None:
        """Draw the canaries' coordinates among ``params`` and record their start values."""
        self._params = [p for p in params if p.requires_grad]
        sizes = np.array([p.numel() for p in self._params])
        total = int(sizes.sum())
        if total < self.m:
            raise ValueError(f"{self.m} gradient canaries need as many parameter coordinates; "
                             f"the audited network has {total}")
        flat = np.random.default_rng(self.seed + 2).choice(total, self.m, replace=False)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        which = np.searchsorted(starts, flat, side="right") - 1
        self._where = [(int(i), int(f - starts[i])) for i, f in zip(which, flat, strict=True)]
        self._initial = self._values()

    def _values(self) -> np.ndarray:
        with torch.no_grad():
            return np.array([float(self._params[i].detach().reshape(-1)[j])
                             for i, j in self._where])

    def _sampled(self, rate: float) -> np.ndarray:
        """Indices of included canaries Poisson-sampled for this step."""
        draw = torch.rand(self.m, generator=self._step_gen).numpy() < rate
        return np.flatnonzero(draw & self.included)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._dp = _dp_optimizer(pl_module)
        if self.sample_rate is None:
            self.sample_rate = _sample_rate(trainer)
        if self._dp is not None:
            self.setup_params(self._dp.params)
            if self.magnitude is None:
                self.magnitude = float(self._dp.max_grad_norm)
            self._patch(self._dp)
        else:
            self.setup_params(list(_resolve(pl_module, self.target).parameters()))
            if self.magnitude is None:
                self.magnitude = PLAIN_MAGNITUDE
            self._expected_batch = float(getattr(trainer.train_dataloader, "batch_size", 1) or 1)

    # ---- DP-SGD: canary rows go through Opacus' clipping and noise
    def _patch(self, optimizer: Any) -> None:
        original = optimizer.clip_and_accumulate

        def clip_and_accumulate() -> None:
            # one canary draw per logical (Poisson) batch: its last physical batch
            if not optimizer._check_skip_next_step(pop_next=False):
                self._append_rows(optimizer)
            original()

        optimizer.clip_and_accumulate = clip_and_accumulate

    def _append_rows(self, optimizer: Any) -> None:
        sampled = self._sampled(float(self.sample_rate))
        self.steps += 1
        if len(sampled) == 0:
            return
        self.samples += len(sampled)
        for pi, p in enumerate(self._params):
            rows = torch.zeros((len(sampled), *p.shape), dtype=p.dtype, device=p.device)
            flat_rows = rows.view(len(sampled), -1)
            for row, c in enumerate(sampled):
                i, j = self._where[c]
                if i == pi:
                    flat_rows[row, j] = float(self.magnitude)
            gs = p.grad_sample
            if isinstance(gs, list):
                gs[-1] = torch.cat([gs[-1], rows])
            else:
                p.grad_sample = torch.cat([gs, rows]) if gs is not None else rows

    # ---- plain training: the canary joins the mean gradient
    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        if self._dp is not None:
            return
        owned = {id(p) for group in optimizer.param_groups for p in group["params"]}
        if not self._params or id(self._params[0]) not in owned:
            return  # e.g. the GAN's generator optimizer
        sampled = self._sampled(float(self.sample_rate))
        self.steps += 1
        self.samples += len(sampled)
        with torch.no_grad():
            for c in sampled:
                i, j = self._where[c]
                p = self._params[i]
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                p.grad.view(-1)[j] += float(self.magnitude) / self._expected_batch

    # ---- after training
    def scores(self) -> np.ndarray:
        """``theta_0 - theta_T`` at each canary's coordinate (m,): high = likely included."""
        if self._initial is None:
            raise RuntimeError("the callback has not seen a training run")
        return self._initial - self._values()

    def audit(self, delta: float, epsilon: float = math.inf,
              guesses: Sequence[float | tuple[int, int]] = (0.05, 0.1, 0.25),
              confidence: float = 0.95) -> CanaryAudit:
        """:func:`audit_scores` of this run's canaries (with ``inserted``)."""
        audit = audit_scores(self.scores(), self.included, delta, guesses, confidence, epsilon)
        return dataclasses.replace(audit, inserted=self.samples)


# --------------------------------------------------------------------------- input canaries

CanaryKind = Literal["gradient", "input"]


@dataclass(frozen=True)
class InputCanaries:
    """``m`` input canaries: ``images`` (m, C, H, W) float32 in {0, 1} (binary noise),
    ``labels`` (m,) int64 uniform over the classes, ``included`` (m,) bool (each with
    probability 1/2, drawn first from ``seed`` like :class:`CanaryCallback`'s)."""

    images: np.ndarray = field(repr=False)
    labels: np.ndarray = field(repr=False)
    included: np.ndarray = field(repr=False)

    @classmethod
    def draw(cls, num_canaries: int, shape: Sequence[int], num_classes: int,
             seed: int = 0) -> InputCanaries:
        """``num_canaries`` canaries of image ``shape`` (C, H, W) for ``num_classes``."""
        if num_canaries < 1 or num_classes < 2:
            raise ValueError(f"need >= 1 canary and >= 2 classes, got {num_canaries}, "
                             f"{num_classes}")
        gen = np.random.default_rng(seed)
        included = gen.random(num_canaries) < 0.5
        images = (gen.random((num_canaries, *shape)) < 0.5).astype(np.float32)
        labels = gen.integers(0, num_classes, num_canaries).astype(np.int64)
        return cls(images, labels, included)

    def insert(self, train: Any) -> Any:
        """``train`` (an ``ImageDataset``, single-label) with the included canaries appended
        (the training loader shuffles; DP-SGD Poisson-samples them like any record)."""
        from medsec.data.types import ImageDataset

        if np.asarray(train.labels).ndim != 1:
            raise ValueError("input canaries need single-label data (one class per image)")
        if tuple(train.images.shape[1:]) != tuple(self.images.shape[1:]):
            raise ValueError(f"canary shape {self.images.shape[1:]} is not the training "
                             f"images' {train.images.shape[1:]}")
        keep = self.included
        return ImageDataset(np.concatenate([np.asarray(train.images), self.images[keep]]),
                            np.concatenate([np.asarray(train.labels), self.labels[keep]]))

    def scores(self, model: nn.Module) -> np.ndarray:
        """``-cross_entropy`` of ``model`` on each canary (m,) float64: high = likely in."""
        from medsec.training.predict import predict_logits

        logits = predict_logits(model, torch.from_numpy(self.images))
        loss = torch.nn.functional.cross_entropy(logits.float(),
                                                 torch.from_numpy(self.labels),
                                                 reduction="none")
        return -loss.double().numpy()

    def audit(self, model: nn.Module, delta: float, epsilon: float = math.inf,
              guesses: Sequence[float | tuple[int, int]] = (0.05, 0.1, 0.25),
              confidence: float = 0.95) -> CanaryAudit:
        """:func:`audit_scores` of ``model``'s canary losses (``inserted``: the canaries put
        into the training split)."""
        audit = audit_scores(self.scores(model), self.included, delta, guesses, confidence,
                             epsilon)
        return dataclasses.replace(audit, inserted=int(self.included.sum()), kind="input")


# --------------------------------------------------------------------------- classifier runs


def audit_classifier_run(recipe: Any, data: Any, dp: Any | None, num_canaries: int,
                         guesses: Sequence[float | tuple[int, int]] = (0.05, 0.1, 0.25),
                         confidence: float = 0.95, seed: int = 0,
                         kind: CanaryKind = "gradient") -> CanaryAudit:
    """Train ``recipe`` (a :class:`~medsec.training.config.ClassifierRecipe`) on ``data`` once
    through the project's training path, with ``num_canaries`` canaries of ``kind``, and
    audit it.

    ``dp``: a :class:`~medsec.privacy.config.DPConfig` (enabled) for DP-SGD, or None for the
    plain fit (claimed epsilon inf; delta then 1/(10 N) for the bound). ``gradient``: Dirac
    gradient canaries in the classifier's own network (``module.net``); ``input``:
    :class:`InputCanaries` appended to the (``max_train``-truncated) training split, so the
    run's N, sample rate and accountant include them.
    """
    from medsec.privacy.training import fit_strategy
    from medsec.training.job import plain_fit, train_classifier

    strategy = fit_strategy(dp) if dp is not None and dp.enabled else plain_fit
    callbacks: list[L.Callback] = []
    canaries = None
    if kind == "input":
        canaries = InputCanaries.draw(num_canaries, data.image_shape, data.num_classes, seed)
        splits = dict(data.splits) | {"train": canaries.insert(recipe.split(data, "train"))}
        data = dataclasses.replace(data, splits=splits)
        recipe = recipe.model_copy(update={"max_train": None})
    elif kind == "gradient":
        callbacks.append(CanaryCallback(num_canaries, seed=seed, target="net"))
    else:
        raise ValueError(f"canary kind must be gradient or input, got {kind!r}")
    trained = train_classifier(recipe, data, callbacks=callbacks, strategy=strategy)
    record = trained.meta["privacy"]
    if record.get("mechanism") == "dp-sgd":
        epsilon, delta = float(record["epsilon"]), float(record["delta"])
    else:
        epsilon, delta = math.inf, 1.0 / (10 * int(trained.meta["num_train"]))
    if canaries is not None:
        return canaries.audit(trained.model, delta, epsilon, guesses, confidence)
    return callbacks[0].audit(delta, epsilon, guesses, confidence)  # type: ignore[attr-defined]
