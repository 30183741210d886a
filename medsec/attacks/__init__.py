"""Evasion attacks with one call shape: ``adv = attack(images, labels)``.

Images are float tensors in [0, 1] (N, C, H, W); models return logits; epsilons are in
pixel units. See :mod:`medsec.attacks.base` for the shared machinery and
:mod:`medsec.attacks.registry` for the name -> class factory.
"""

from medsec.attacks.apgd import APGD
from medsec.attacks.autoattack import AutoAttackLite
from medsec.attacks.base import (
    Attack,
    AttackStats,
    cross_entropy_loss,
    margin_loss,
    model_guard,
    predict_logits,
)
from medsec.attacks.bim import BIM
from medsec.attacks.cw import CWL2
from medsec.attacks.deepfool import DeepFool
from medsec.attacks.fgsm import FGSM
from medsec.attacks.image_scaling import ImageScalingAttack, ResizeThenClassify, ScalingResult
from medsec.attacks.mim import MIM
from medsec.attacks.one_pixel import OnePixel
from medsec.attacks.pgd import PGD
from medsec.attacks.registry import ATTACKS, attack_params, build_attack
from medsec.attacks.square import Square
from medsec.attacks.transfer import transfer_evaluate
from medsec.attacks.uap import UAP

__all__ = [
    "APGD",
    "ATTACKS",
    "BIM",
    "CWL2",
    "FGSM",
    "MIM",
    "PGD",
    "UAP",
    "Attack",
    "AttackStats",
    "AutoAttackLite",
    "DeepFool",
    "ImageScalingAttack",
    "OnePixel",
    "ResizeThenClassify",
    "ScalingResult",
    "Square",
    "attack_params",
    "build_attack",
    "cross_entropy_loss",
    "margin_loss",
    "model_guard",
    "predict_logits",
    "transfer_evaluate",
]
