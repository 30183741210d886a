"""Network factory (name -> MONAI network with normalisation as first layer)."""

from medsec.models.factory import build_classifier, known_model_names

__all__ = ["build_classifier", "known_model_names"]
