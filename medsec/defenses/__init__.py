"""Defenses, scored against attacks that know about them.

- :mod:`~medsec.defenses.config`: ``DefenseConfig`` (the ``defense:`` config section).
- :mod:`~medsec.defenses.training`: adversarial training (PGD, fast FGSM), TRADES, Gaussian
  noise, defensive distillation, as hooks of the one training loop.
- :mod:`~medsec.defenses.transforms`: bit depth, median filter, JPEG (PIL), low-pass;
  ``Preprocessed(model, transform)`` with its BPDA view; ``EOT``.
- :mod:`~medsec.defenses.autoencoder`: MagNet autoencoder (MONAI) and reformer.
- :mod:`~medsec.defenses.detectors`: Mahalanobis, feature-squeezing and MagNet detectors.
- :mod:`~medsec.defenses.smoothing`: randomized smoothing certification (Cohen et al.).
- :mod:`~medsec.defenses.adaptive`: standard and adaptive attacks (BPDA, EOT,
  detector-aware PGD); :mod:`~medsec.defenses.evaluate`: scoring and gradient-masking flags.
- :mod:`~medsec.defenses.build`: config entry -> built ``Defense``;
  :mod:`~medsec.defenses.scorecard`: the markdown scorecard.

Names are imported on first use (PEP 562): ``medsec.config`` imports
``medsec.defenses.config`` on every run, which must not pull in torch and Lightning.
"""

from medsec.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "DefenseConfig": "config", "DefenseSpec": "config", "DefenseEvalConfig": "config",
    "Defense": "base", "DefenseError": "base", "require_classifier": "base",
    "AdversarialBatches": "training", "TradesLoss": "training", "NoiseBatches": "training",
    "TemperatureLoss": "training", "DistillationLoss": "training",
    "DefendedTraining": "training", "train_defended": "training",
    "BitDepth": "transforms", "MedianFilter": "transforms", "JPEG": "transforms",
    "LowPass": "transforms", "GaussianNoise": "transforms", "Preprocessed": "transforms",
    "EOT": "transforms", "straight_through": "transforms",
    "PixelAutoEncoder": "autoencoder", "Reformer": "autoencoder",
    "train_autoencoder": "autoencoder",
    "MahalanobisDetector": "detectors", "SqueezeDetector": "detectors",
    "MagNetDetector": "detectors", "detection_metrics": "detectors",
    "penultimate_features": "features",
    "RandomizedSmoothing": "smoothing", "certified_radius": "smoothing",
    "clopper_pearson_lower": "smoothing", "certified_accuracy": "smoothing",
    "DetectorAware": "adaptive", "DetectorAwarePGD": "adaptive",
    "DefenseResult": "evaluate", "evaluate_defense": "evaluate",
    "BuildContext": "build", "build_defense": "build", "undefended": "build",
    "transform_defense": "build", "detector_defense": "build", "smoothing_defense": "build",
    "scorecard_markdown": "scorecard",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
