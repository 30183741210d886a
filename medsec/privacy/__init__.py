"""Privacy: DP-SGD training and accounting, membership/extraction/inversion attacks.

- :mod:`~medsec.privacy.accounting`: epsilon for a DP-SGD run, noise for a target epsilon.
- :mod:`~medsec.privacy.dp`: ``DPSettings``, ``check_dp_compatible``, ``private_training``
  (Opacus wired into the Lightning ``ClassifierModule``), ``EpsilonLogger``.
- :mod:`~medsec.privacy.membership`: loss-threshold and shadow-model membership inference.
- :mod:`~medsec.privacy.lira`: LiRA (online/offline) and RMIA with reference models.
- :mod:`~medsec.privacy.extraction`: model extraction through a prediction API.
- :mod:`~medsec.privacy.inversion`: class-representative model inversion.
- :mod:`~medsec.privacy.plain_train`: the default tiny trainer (``TrainFn``) for the attacks.

Metrics over attack scores live in :mod:`medsec.metrics.privacy`.
"""

from medsec.privacy.accounting import (
    UnreachableEpsilonError,
    epsilon_for,
    epsilon_reference,
    noise_for_target,
)
from medsec.privacy.dp import (
    DPSettings,
    DPState,
    EpsilonLogger,
    check_dp_compatible,
    make_private,
    private_training,
)
from medsec.privacy.extraction import ExtractionResult, extract_model, victim_api
from medsec.privacy.inversion import (
    InversionResult,
    class_representative_inversion,
    inversion_metrics,
)
from medsec.privacy.lira import ReferenceModels, lira_scores, rmia_scores, train_reference_models
from medsec.privacy.membership import ShadowModelAttack, loss_threshold_scores
from medsec.privacy.plain_train import TrainFn, make_train_fn, train_plain

__all__ = [
    "DPSettings", "DPState", "EpsilonLogger", "ExtractionResult", "InversionResult",
    "ReferenceModels", "ShadowModelAttack", "TrainFn", "UnreachableEpsilonError",
    "check_dp_compatible", "class_representative_inversion", "epsilon_for", "epsilon_reference",
    "extract_model", "inversion_metrics", "lira_scores", "loss_threshold_scores", "make_private",
    "make_train_fn", "noise_for_target", "private_training", "rmia_scores",
    "train_plain", "train_reference_models", "victim_api",
]
