"""Adversarial segmentation datasets on disk (like :mod:`medsec.attacks.dataset`).

``<dir>/<attack>.npz`` holds ``test_images`` float32 (N, C, *S) in [0, 1] (adversarial),
``test_masks`` int64 (N, *S) (true masks), ``target_masks`` int64 (N, *S) (targets; the true
masks for untargeted attacks), ``pred_masks`` int64 (N, *S) (the model's prediction on the
adversarial images) and ``clean_indices`` int64 (N,) into the source test split.
``<dir>/<attack>.json`` records the attack, its parameters, the source model and data, and
the metrics (timings left out so the file is reproducible).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medsec.io import save_npz_deterministic, write_json
from medsec.segmentation.job import SegAttackResult

FORMAT = "medsec-adversarial-segmentation-v1"


def save_seg_adversarial(directory: str | Path, result: SegAttackResult,
                         source: dict[str, Any]) -> dict[str, str]:
    """Write the ``.npz`` and ``.json`` of one attack; returns their paths."""
    directory = Path(directory)
    name = result.spec.name
    arrays = {"test_images": result.adversarial.numpy().astype(np.float32),
              "test_masks": result.masks.numpy().astype(np.int64),
              "target_masks": result.targets.numpy().astype(np.int64),
              "pred_masks": result.pred_adv.numpy().astype(np.int64),
              "clean_indices": np.asarray(result.indices, dtype=np.int64)}
    npz = save_npz_deterministic(directory / f"{name}.npz", arrays)
    meta = {"format": FORMAT, "attack": name, "params": result.spec.model_dump(mode="json"),
            "source": source,
            "metrics": {k: v for k, v in result.metrics.items() if k != "seconds"}}
    js = write_json(directory / f"{name}.json", meta)
    return {"npz": str(npz), "json": str(js)}
