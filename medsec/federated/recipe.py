"""The federated recipe as a trainer of the recipe audit (``medsec.privacy.recipe_audit``).

:class:`FederatedTrainer` is the ``RecipeSpec.trainer`` of a federated recipe audit: given a
classifier recipe and a data set whose training split is one half of the audit pool, it runs
the configured federation (the hospitals' shares of that half: ``federated.partition``, one
client per site when the half carries site keys; FedAvg / FedProx for ``federated.rounds``
rounds; client DP when enabled) through :func:`medsec.federated.simulation.run_federation`
and returns the global model. The federation always runs on the in-process grid: it drives
the very same Flower ``ServerApp`` / ``ClientApp`` as the Ray simulation and the deployment,
one client after the other, so it is the same algorithm with the same seeds (Ray only moves
the clients into actors, which costs start-up time and changes nothing in the arithmetic).
Side analyses of the federated stage (centralised baseline, gradient inversion, canary audit)
are not part of the recipe and are switched off.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from medsec.data.types import LoadedDataset
from medsec.errors import DataError
from medsec.federated.config import FederatedConfig
from medsec.training.config import ClassifierRecipe


@dataclass
class FederatedModel:
    """The global model (``model``, eval mode) and its meta: the classifier's, ``federated``,
    ``rounds`` and ``privacy`` (``mechanism``: ``none`` or ``federated-client-dp`` with the
    largest client ``epsilon`` and ``delta`` after all rounds)."""

    model: Any
    meta: dict[str, Any]
    summary: dict[str, float]


@dataclass(frozen=True)
class FederatedTrainer:
    """``(recipe, data) -> FederatedModel``: the federation ``fed`` on ``data``'s training
    split (picklable: a reference model may run on a Dask worker)."""

    fed: FederatedConfig

    def settings(self) -> FederatedConfig:
        """``fed`` as the recipe: in-process grid, no side analyses."""
        off = {"enabled": False}
        return self.fed.model_copy(update={
            "runtime": "inprocess", "compare_centralized": False,
            "canary": self.fed.canary.model_copy(update=off),
            "gradient_inversion": self.fed.gradient_inversion.model_copy(update=off)})

    def __call__(self, recipe: ClassifierRecipe, data: LoadedDataset) -> FederatedModel:
        from medsec.federated.simulation import run_federation

        fed = self.settings()
        if fed.partition == "site" and data.splits["train"].site_ids is None:
            raise DataError("federated.partition=site: the audit pool carries no site keys "
                            "(both the training and validation splits need a 'site' column)")
        flwr = logging.getLogger("flwr")
        level = flwr.level
        flwr.setLevel(logging.WARNING)  # one federation per reference model: no round banners
        try:
            result = run_federation(fed, recipe, data)
        finally:
            flwr.setLevel(level)
        return FederatedModel(result.model, result.meta | {"privacy": client_dp_record(
            fed, result.partition["sizes"], result.summary)}, result.summary)


def client_dp_record(fed: FederatedConfig, sizes: list[int],
                     summary: dict[str, float]) -> dict[str, Any]:
    """The federation's privacy claim: ``{"mechanism": "none"}`` without client DP, else the
    largest client epsilon after all rounds and the largest client delta (1/(10 N_k) unless
    set), i.e. the weakest hospital's (epsilon, delta)."""
    if not fed.client_dp.enabled:
        return {"mechanism": "none"}
    from medsec.privacy.plan import resolve_delta

    epsilon = float(summary.get("epsilon_client_max", math.nan))
    delta = max(resolve_delta(fed.client_dp.delta, n) for n in sizes)
    return {"mechanism": "federated-client-dp", "epsilon": epsilon, "delta": delta,
            "noise_multiplier": fed.client_dp.noise_multiplier,
            "target_epsilon": fed.client_dp.target_epsilon,
            "max_grad_norm": fed.client_dp.max_grad_norm}
