"""Network factory (name -> MONAI network with normalisation as first layer), the classifier
check and the model guard. Names are imported on first use (PEP 562): the config imports
``medsec.models.config`` and must not pay for importing torch and MONAI."""

from medsec.lazy import lazy_exports

_EXPORTS = {"build_classifier": "factory", "known_model_names": "factory"}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
