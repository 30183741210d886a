"""A binary-safe worst-case ensemble: APGD-CE, APGD-margin, then Square (no DLR losses)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medsec.attacks.apgd import APGD
from medsec.attacks.base import Attack, check_positive, per_example
from medsec.attacks.square import Square


class AutoAttackLite(Attack):
    """Run APGD-CE, then APGD-margin on the survivors, then Square on the survivors.

    Works for any number of classes >= 2 (AutoAttack's DLR needs >= 3-4). Per example the
    result is the first adversarial found, else the candidate with the lowest margin; an
    example is robust only if it survives all three. ``last_stats.details`` counts the
    examples each component fooled (``fooled_by_apgd_ce``, ...).

    Args:
        model: pixel-space classifier returning logits (N, K).
        eps: budget in pixel units. norm: ``"linf"`` or ``"l2"``.
        steps: APGD iterations. restarts: APGD restarts.
        n_queries: Square query budget per example. seed: base seed of the components.
    """

    name = "autoattack_lite"
    supports_multilabel = True

    def __init__(self, model: nn.Module, eps: float = 8 / 255, norm: str = "linf", steps: int = 100,
                 restarts: int = 1, n_queries: int = 1000, seed: int = 0) -> None:
        super().__init__(model, eps=eps, norm=norm, seed=seed)
        assert self.eps is not None
        self.steps = check_positive("steps", steps, integer=True)
        self.restarts = check_positive("restarts", restarts, integer=True)
        self.n_queries = check_positive("n_queries", n_queries, integer=True)
        common = {"eps": self.eps, "norm": norm}
        self.components: dict[str, Attack] = {
            "apgd_ce": APGD(model, loss="ce", steps=steps, restarts=restarts, seed=seed, **common),
            "apgd_margin": APGD(
                model, loss="margin", steps=steps, restarts=restarts, seed=seed + 1, **common
            ),
            "square": Square(model, n_queries=n_queries, seed=seed + 2, **common),
        }

    def _perturb(self, images: Tensor, labels: Tensor, clean_logits: Tensor | None) -> Tensor:
        assert clean_logits is not None
        adv = images.clone()
        margin = self.adversarial_margin(clean_logits, labels)
        robust = ~self.is_adversarial(clean_logits, labels)
        for name, attack in self.components.items():
            index = robust.nonzero().squeeze(1)
            fooled_here = 0
            if index.numel():
                candidate = attack(images[index], labels[index])
                assert attack.last_stats is not None
                self._queries.index_add_(0, index, attack.last_stats.queries)
                logits = self._forward(candidate, index)
                cand_margin = self.adversarial_margin(logits, labels[index])
                fooled = self.is_adversarial(logits, labels[index])
                better = fooled | (cand_margin < margin[index])
                adv[index] = torch.where(per_example(better, images), candidate, adv[index])
                margin[index] = torch.where(better, cand_margin, margin[index])
                robust[index[fooled]] = False
                fooled_here = int(fooled.sum())
                self._iterations += attack.last_stats.iterations
            self._details[f"fooled_by_{name}"] = float(fooled_here)
        return adv
