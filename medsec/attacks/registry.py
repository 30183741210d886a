"""Name -> attack class registry and a checked factory."""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from medsec.attacks.apgd import APGD
from medsec.attacks.autoattack import AutoAttackLite
from medsec.attacks.base import Attack
from medsec.attacks.bim import BIM
from medsec.attacks.cw import CWL2
from medsec.attacks.deepfool import DeepFool
from medsec.attacks.fgsm import FGSM
from medsec.attacks.mim import MIM
from medsec.attacks.one_pixel import OnePixel
from medsec.attacks.pgd import PGD
from medsec.attacks.square import Square
from medsec.attacks.uap import UAP

ATTACKS: dict[str, type[Attack]] = {
    cls.name: cls
    for cls in (FGSM, BIM, PGD, MIM, CWL2, DeepFool, APGD, Square, OnePixel, UAP, AutoAttackLite)
}
"""Every registered attack by its ``name`` (lower_snake_case, as used in configs)."""


MULTILABEL_ATTACKS = tuple(sorted(n for n, c in ATTACKS.items() if c.supports_multilabel))
"""Attacks that run on multi-label data (multi-hot labels (N, L)), untargeted."""


def multilabel_refusal(name: str, targeted: bool) -> str | None:
    """Why attack ``name`` (``targeted`` or not) cannot run on multi-label data, or None when
    it can: a targeted attack aims at one class, and DeepFool/CW/one-pixel/UAP are built on
    one class per image (class boundaries, argmax changes)."""
    if name in ATTACKS and not ATTACKS[name].supports_multilabel:
        return f"{name} needs one class per image"
    if targeted:
        return "a targeted attack aims at one target class per image"
    return None


def attack_params(name: str) -> dict[str, Any]:
    """Constructor parameters of attack ``name`` with their defaults (``model`` excluded)."""
    cls = _lookup(name)
    params = inspect.signature(cls.__init__).parameters
    return {
        k: p.default
        for k, p in params.items()
        if k not in ("self", "model") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def build_attack(name: str, model: nn.Module, **params: Any) -> Attack:
    """Instantiate attack ``name`` on ``model`` with keyword ``params``.

    Raises ValueError for an unknown name (listing the known ones) or an unknown parameter
    (naming it and listing the accepted ones).
    """
    cls = _lookup(name)
    accepted = attack_params(name)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) for attack {name!r}: {', '.join(unknown)}; "
            f"accepted: {', '.join(accepted)}"
        )
    return cls(model, **params)


def _lookup(name: str) -> type[Attack]:
    try:
        return ATTACKS[name]
    except KeyError:
        raise ValueError(
            f"unknown attack {name!r}; known attacks: {', '.join(sorted(ATTACKS))}"
        ) from None
