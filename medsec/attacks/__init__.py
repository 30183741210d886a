"""Evasion attacks with one call shape: ``adv = attack(images, labels)``.

Images are float tensors in [0, 1] (N, C, H, W); models return logits; epsilons are in
pixel units. See :mod:`medsec.attacks.base` for the shared machinery,
:mod:`medsec.attacks.registry` for the name -> class factory, :mod:`medsec.attacks.config`
for the ``attack:`` config section, :mod:`medsec.attacks.suite` for the whole evaluation
(:mod:`~medsec.attacks.runner` runs one spec, :mod:`~medsec.attacks.scoring` scores,
:mod:`~medsec.attacks.results` holds what it reports) and :mod:`medsec.attacks.dataset` for
the adversarial datasets it writes.

Names are imported on first use (PEP 562): ``medsec.config`` imports
``medsec.attacks.config`` on every run and must not pay for importing torch.
"""

from medsec.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "APGD": "apgd", "AutoAttackLite": "autoattack", "BIM": "bim", "CWL2": "cw",
    "DeepFool": "deepfool", "FGSM": "fgsm", "MIM": "mim", "OnePixel": "one_pixel",
    "PGD": "pgd", "Square": "square", "UAP": "uap",
    "Attack": "base", "AttackStats": "base", "cross_entropy_loss": "base",
    "margin_loss": "base", "bce_loss": "base", "multilabel_margin_loss": "base",
    "predictions": "base",
    "ImageScalingAttack": "image_scaling", "ResizeThenClassify": "image_scaling",
    "ScalingResult": "image_scaling",
    "ATTACKS": "registry", "attack_params": "registry", "build_attack": "registry",
    "transfer_evaluate": "transfer",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
