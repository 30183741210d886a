"""Privacy: DP-SGD training and accounting, membership/extraction/inversion attacks.

- :mod:`~medsec.privacy.config`: ``PrivacyConfig`` (the ``privacy:`` config section).
- :mod:`~medsec.privacy.accounting`: epsilon for a DP-SGD run, noise for a target epsilon.
- :mod:`~medsec.privacy.plan`: ``DPConfig`` -> ``DPPlan`` (``plan_dp``: delta, noise) ->
  ``DPRecord`` (what a run spent; the checkpoint's ``meta["privacy"]``).
- :mod:`~medsec.privacy.dp`: ``check_dp_compatible``, ``private_training`` (Opacus wired into
  the Lightning ``ClassifierModule``), ``DPState``, ``EpsilonLogger``.
- :mod:`~medsec.privacy.training`: DP-SGD as a fit strategy of the one training path.
- :mod:`~medsec.privacy.membership`: loss-threshold and shadow-model membership inference.
- :mod:`~medsec.privacy.lira`: LiRA (online/offline) and RMIA with reference models.
- :mod:`~medsec.privacy.extraction`: model extraction through a prediction API.
- :mod:`~medsec.privacy.inversion`: class-representative model inversion.
- :mod:`~medsec.privacy.plain_train`: the default tiny trainer (``TrainFn``) for the attacks.
- :mod:`~medsec.privacy.recipe_audit`: the recipe audit (target and reference models on random
  halves of one train+val pool; LiRA/RMIA from their query statistics; ``train_reference`` is
  the pure one-reference-model function a task runner maps).
- :mod:`~medsec.privacy.audit_sets`, :mod:`~medsec.privacy.audit`: the checkpoint audit's data
  sets and the audit of one model; :mod:`~medsec.privacy.sweep`, :mod:`~medsec.privacy.report`: the
  privacy-utility sweep's labels and its table/figures (its configs: ``medsec.stages``).

Metrics over attack scores live in :mod:`medsec.metrics.privacy`.

Names are imported on first use (PEP 562): Opacus, sklearn and Lightning take seconds to
import, and ``medsec.config`` imports ``medsec.privacy.config`` on every run.
"""

from medsec.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "UnreachableEpsilonError": "accounting", "epsilon_for": "accounting",
    "epsilon_reference": "accounting", "noise_for_target": "accounting",
    "DPPlan": "plan", "DPRecord": "plan", "plan_dp": "plan",
    "DPState": "dp", "EpsilonLogger": "dp",
    "check_dp_compatible": "dp", "make_private": "dp", "private_training": "dp",
    "ExtractionResult": "extraction", "extract_model": "extraction", "victim_api": "extraction",
    "InversionResult": "inversion", "class_representative_inversion": "inversion",
    "inversion_metrics": "inversion",
    "ReferenceModels": "lira", "lira_scores": "lira", "rmia_scores": "lira",
    "train_reference_models": "lira",
    "ShadowModelAttack": "membership", "loss_threshold_scores": "membership",
    "AuditPool": "recipe_audit", "RecipeSpec": "recipe_audit", "build_pool": "recipe_audit",
    "run_recipe_audit": "recipe_audit", "train_reference": "recipe_audit",
    "TrainFn": "plain_train", "make_train_fn": "plain_train", "train_plain": "plain_train",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
