"""``attack:`` section of the config: which evasion attacks run, at which budgets, and what
the attack stage writes.

Every attack spec is checked against the registry (:mod:`medsec.attacks.registry`) when the
config is loaded, so a typo fails before any model is loaded, naming the field, e.g.
``attack.attacks.2.name: unknown attack 'pgdd'; known attacks: apgd, ...`` or
``attack.attacks.1.eps.2: eps=8.0 exceeds 1 for the linf norm ...``.

Epsilons are in pixel units of [0, 1] images, as numbers (``0.0313``) or fractions
(``"8/255"``). The registry (and torch) is imported only when a config actually lists
attacks; the built-in defaults are known to be valid (a unit test re-validates them), so
``import medsec.config`` stays light.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator, model_validator

from medsec.config_base import StrictModel

RESERVED_PARAMS = {
    "eps": "give budgets in the spec's `eps` list",
    "targeted": "use the spec's `targeted` flag",
    "loss_fn": "a Python callable cannot come from YAML (APGD takes `loss: ce|margin`)",
    "model": "the model is the trained checkpoint",
}
"""Constructor parameters a spec's ``params`` may not set, and what to do instead."""

_LABEL = re.compile(r"^[a-z][a-z0-9_]*$")
_FRACTION = re.compile(r"^\s*[0-9.]+\s*/\s*[0-9.]+\s*$")
_RELATIVE = re.compile(r"^\s*eps\s*([*/])\s*([0-9.]+)\s*$")


def resolve_params(params: dict[str, Any], eps: float | None) -> dict[str, Any]:
    """Parameters with values relative to the budget resolved: ``"eps/4"`` -> eps / 4,
    ``"eps*0.25"`` -> eps * 0.25 (e.g. a PGD step size that scales with epsilon)."""
    out = {}
    for key, value in params.items():
        match = _RELATIVE.match(value) if isinstance(value, str) else None
        if match:
            if eps is None:
                raise ValueError(f"{key}={value!r} is relative to eps, but there is no eps")
            factor = float(match.group(2))
            out[key] = eps * factor if match.group(1) == "*" else eps / factor
        else:
            out[key] = value
    return out


def parse_epsilon(value: Any) -> float:
    """A budget in pixel units from a number or a string ``"8/255"`` / ``"0.03"``."""
    if isinstance(value, str):
        num, slash, den = value.strip().partition("/")
        try:
            number = float(num) / float(den) if slash else float(num)
        except (ValueError, ZeroDivisionError):
            raise ValueError(
                f"cannot read epsilon {value!r}: use a number or a fraction like '8/255'"
            ) from None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    else:
        raise ValueError(f"epsilon must be a number or a fraction like '8/255', got {value!r}")
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"epsilon must be finite and >= 0 (pixel units), got {value!r}")
    return number


Epsilon = Annotated[float, BeforeValidator(parse_epsilon)]


def grey_levels(eps: float) -> int:
    """An epsilon in grey levels of 8-bit images: ``round(eps * 255)`` (8/255 -> 8)."""
    return int(round(eps * 255))


class AttackSpec(StrictModel):
    """One attack of the suite, run once per epsilon.

    Args:
        name: registered attack (``fgsm``, ``pgd``, ... : ``medsec.attacks.ATTACKS``).
        params: constructor parameters other than the budget (e.g. ``steps``, ``norm``);
            fractions such as ``alpha: "1/255"`` are read as numbers, and ``"eps/4"`` or
            ``"eps*0.25"`` scale with each epsilon (see :func:`resolve_params`).
        eps: budgets in pixel units of the attack's norm; empty for attacks without one
            (``one_pixel``: its budget is ``params.pixels``) or to run a minimal-norm attack
            (``deepfool``, ``cw``) unbounded.
        targeted: aim at the class ``(label + 1) mod K`` (attacks that have a targeted mode).
        label: name of this entry in files and metrics (default ``name``); needed when the
            same attack appears twice, e.g. ``pgd`` and ``pgd_l2``.
    """

    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    eps: tuple[Epsilon, ...] = Field(default=(), validate_default=True)
    targeted: bool = False
    label: str | None = None

    @property
    def id(self) -> str:
        """``label`` or ``name``: the prefix of this spec's files and metrics."""
        return self.label or self.name

    @field_validator("name")
    @classmethod
    def _registered(cls, value: str) -> str:
        from medsec.attacks.registry import ATTACKS

        if value not in ATTACKS:
            raise ValueError(
                f"unknown attack {value!r}; known attacks: {', '.join(sorted(ATTACKS))}"
            )
        return value

    @field_validator("params")
    @classmethod
    def _known_params(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        name = info.data.get("name")
        if name is None:  # the name itself was invalid: reported there
            return value
        from torch import nn

        from medsec.attacks.registry import attack_params, build_attack

        for key in value:
            if key in RESERVED_PARAMS:
                raise ValueError(f"{key!r} cannot be set here: {RESERVED_PARAMS[key]}")
        value = {
            k: parse_epsilon(v) if isinstance(v, str) and _FRACTION.match(v) else v
            for k, v in value.items()
        }  # pixel-unit values such as alpha: "1/255"
        accepted = [k for k in attack_params(name) if k not in RESERVED_PARAMS]
        unknown = sorted(set(value) - set(accepted))
        if unknown:
            raise ValueError(
                f"unknown parameter(s) for attack {name!r}: {', '.join(unknown)}; "
                f"accepted: {', '.join(accepted)}"
            )
        try:  # the attack's own range/type checks (relative values at eps = 8/255)
            probe = resolve_params(value, 8 / 255 if "eps" in attack_params(name) else None)
            build_attack(name, nn.Identity(), **probe)
        except (TypeError, ZeroDivisionError) as exc:
            raise ValueError(f"a parameter has the wrong type or value: {exc}") from None
        return value

    @field_validator("eps")
    @classmethod
    def _budgets(cls, value: tuple[float, ...], info: ValidationInfo) -> tuple[float, ...]:
        name, params = info.data.get("name"), info.data.get("params")
        if name is None or params is None:
            return value
        from medsec.attacks.base import check_epsilon
        from medsec.attacks.registry import ATTACKS, attack_params

        defaults = attack_params(name)
        if "eps" not in defaults:
            if value:
                raise ValueError(
                    f"{name} has no epsilon (its budget is in params, e.g. `pixels`); "
                    "leave eps empty"
                )
            return value
        if not value and defaults["eps"] is not None:
            raise ValueError(f"{name} needs at least one epsilon (pixel units, e.g. '8/255')")
        relative = [k for k, v in params.items() if isinstance(v, str) and _RELATIVE.match(v)]
        if not value and relative:
            raise ValueError(f"params {', '.join(relative)} are relative to eps: give eps")
        norm = params.get("norm", defaults.get("norm", ATTACKS[name].norms[0]))
        for i, eps in enumerate(value):
            try:
                check_epsilon("eps", eps, norm)
            except ValueError as exc:
                raise ValueError(f"item {i}: {exc}") from None
        levels = [grey_levels(e) for e in value]
        if len(set(levels)) != len(levels):
            raise ValueError(
                f"epsilons {list(value)} are not distinct in grey levels (round(eps*255) = "
                f"{levels}); files and metrics are named by grey level"
            )
        return value

    @field_validator("targeted")
    @classmethod
    def _has_targeted_mode(cls, value: bool, info: ValidationInfo) -> bool:
        name = info.data.get("name")
        if value and name is not None:
            from medsec.attacks.registry import ATTACKS

            if not ATTACKS[name].supports_targeted:
                targeted = sorted(n for n, c in ATTACKS.items() if c.supports_targeted)
                raise ValueError(
                    f"{name} has no targeted mode; attacks with one: {', '.join(targeted)}"
                )
        return value

    @field_validator("label")
    @classmethod
    def _label_format(cls, value: str | None) -> str | None:
        if value is not None and not _LABEL.match(value):
            raise ValueError(f"label must be lower_snake_case (a-z, 0-9, _), got {value!r}")
        return value


class SurrogateConfig(StrictModel):
    """The surrogate of transfer attacks, trained by the project's training path."""

    model: str = "small_cnn"
    norm: Literal["batch", "group", "instance"] = "batch"
    epochs: int = Field(default=3, gt=0, le=1000)
    seed: int = 1

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        from medsec.models.factory import known_model_names

        if value not in known_model_names():
            raise ValueError(f"unknown model {value!r}; known: {', '.join(known_model_names())}")
        return value


class TransferConfig(StrictModel):
    """Craft the listed attacks (spec ids, all their epsilons) on a surrogate; score the victim.

    Crafted without early stopping (the full budget), unless a spec sets ``early_stop``.
    """

    surrogate: SurrogateConfig = SurrogateConfig()
    attacks: tuple[str, ...] = ("pgd",)


class ImageScalingConfig(StrictModel):
    """Image-scaling attack on a ``resize -> classifier`` pipeline (Xiao et al. 2019).

    Sources are test images upscaled to ``source_size``; each is perturbed so that the
    pipeline's ``mode`` downscaling to the classifier's native size yields another test image
    of a different class.
    """

    enabled: bool = True
    source_size: int = Field(default=224, ge=16, le=1024)
    mode: Literal["nearest", "bilinear", "bicubic", "area"] = "bilinear"
    n_examples: int = Field(default=16, gt=0, le=1024)
    steps: int = Field(default=300, gt=0, le=100000)


def _spec(name: str, eps: tuple[float, ...], **params: Any) -> AttackSpec:
    """A built-in default spec (not re-validated at import: keeps torch out of the import)."""
    return AttackSpec.model_construct(name=name, params=params, eps=eps, targeted=False, label=None)


_BUDGETS = (2 / 255, 4 / 255, 8 / 255)
DEFAULT_ATTACKS: tuple[AttackSpec, ...] = (
    _spec("fgsm", _BUDGETS),
    _spec("pgd", _BUDGETS, steps=10, alpha="eps/4"),
    _spec("deepfool", _BUDGETS, norm="linf", steps=20),
    _spec("square", _BUDGETS, n_queries=100),
    _spec("autoattack_lite", _BUDGETS, steps=20, n_queries=100),
    _spec("uap", (8 / 255,), epochs=2),
)
"""The default suite (what ``params.yaml`` lists; ``params.yaml`` also turns ``transfer`` on):
well under a minute on the phantoms. ``one_pixel`` is not in it (an L0 threat model; add it
with a small ``population``/``steps``)."""


class AttackConfig(StrictModel):
    """The attack stage.

    Args:
        n_examples: test images attacked (the first ones of the test split, after
            ``dataset.max_eval``).
        batch_size: images per attack call.
        seed: seed of every attack that takes one (unless its ``params`` set ``seed``).
        attacks: the suite, run in order (see :class:`AttackSpec`).
        uap_fit_size: training images a ``uap`` perturbation is fitted on.
        transfer: transfer attacks from a surrogate model (off when absent).
        image_scaling: the image-scaling attack on a resize step.
        save_adversarial: write ``outputs/adversarial/<id>_eps<k>.npz`` (+ ``.json``).
        mlflow_sample: images of each adversarial dataset logged to MLflow (0: none).
    """

    n_examples: int = Field(default=128, gt=0)
    batch_size: int = Field(default=128, gt=0)
    seed: int = Field(default=0, ge=0)
    attacks: tuple[AttackSpec, ...] = DEFAULT_ATTACKS
    uap_fit_size: int = Field(default=256, gt=0)
    transfer: TransferConfig | None = None
    image_scaling: ImageScalingConfig = ImageScalingConfig()
    save_adversarial: bool = True
    mlflow_sample: int = Field(default=16, ge=0)

    @field_validator("attacks")
    @classmethod
    def _unique_ids(cls, value: tuple[AttackSpec, ...]) -> tuple[AttackSpec, ...]:
        seen: dict[str, int] = {}
        for i, spec in enumerate(value):
            if spec.id in seen:
                raise ValueError(
                    f"item {i}: {spec.id!r} already used by item {seen[spec.id]}; give one of "
                    "them a distinct `label`"
                )
            if spec.id in ("worst_case", "transfer", "image_scaling", "clean"):
                raise ValueError(f"item {i}: {spec.id!r} is reserved; set another `label`")
            seen[spec.id] = i
        return value

    @model_validator(mode="after")
    def _transfer_refers_to_specs(self) -> AttackConfig:
        if self.transfer is None:
            return self
        specs = {spec.id: spec for spec in self.attacks}
        for i, ident in enumerate(self.transfer.attacks):
            spec = specs.get(ident)
            where = f"transfer.attacks.{i}"
            if spec is None:
                raise ValueError(
                    f"{where}: {ident!r} is not one of the configured attacks "
                    f"({', '.join(specs) or 'none'})"
                )
            if spec.name == "uap" or spec.targeted or not spec.eps:
                raise ValueError(
                    f"{where}: {ident!r} cannot be transferred (needs an untargeted, "
                    "eps-bounded attack other than uap)"
                )
        return self
