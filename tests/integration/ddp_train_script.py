"""Two-process Lightning DDP training (gloo on the CPU), run by tests/integration/test_ddp.py.

A script, not a test: Lightning's ``ddp`` launcher starts rank 1 by re-running this command
line (inside pytest it would re-run pytest). Usage::

    python tests/integration/ddp_train_script.py PHANTOMS.npz OUT_DIR plain,adversarial

For each mode, every rank trains through ``medsec.training.job.train_classifier`` with
``train.devices: 2, strategy: ddp``; afterwards the ranks all-gather their flattened
weights. Rank 0 writes ``OUT_DIR/<mode>.pt`` (the project checkpoint) and
``OUT_DIR/<mode>.json`` (world size, whether all ranks hold identical weights, test accuracy,
history, device).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(phantoms: str, out_dir: str, modes: str) -> None:
    for mode in modes.split(","):  # the second fit reuses the process group of the first
        train_mode(phantoms, out_dir, mode)


def train_mode(phantoms: str, out_dir: str, mode: str) -> None:
    import torch
    import torch.distributed as dist

    from medsec.data.phantoms import load_phantoms
    from medsec.defenses.training import AdversarialBatches
    from medsec.training.checkpoint import save_classifier
    from medsec.training.config import ClassifierRecipe, TrainConfig
    from medsec.training.job import build_module, evaluate_classifier, train_classifier

    data = load_phantoms(phantoms)
    train = TrainConfig(epochs=3, batch_size=32, accelerator="cpu", devices=2, strategy="ddp")
    recipe = ClassifierRecipe(train=train, seed=0)
    module = build_module(recipe, data)
    if mode == "adversarial":  # fast FGSM adversarial training (Wong et al. 2020)
        module.batch_transform = AdversarialBatches.fast_fgsm(4 / 255, seed=0)
    trained = train_classifier(recipe, data, module=module)

    flat = torch.cat([v.detach().float().flatten() for v in trained.model.state_dict().values()])
    gathered = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    if dist.get_rank() != 0:
        return
    out = Path(out_dir)
    save_classifier(out / f"{mode}.pt", trained.model, trained.meta)
    test = evaluate_classifier(trained.model, data.splits["test"], data.num_classes)
    report = {
        "world_size": dist.get_world_size(),
        "identical": all(torch.equal(gathered[0], g) for g in gathered[1:]),
        "max_abs_diff": max(float((gathered[0] - g).abs().max()) for g in gathered[1:]),
        "test_acc": test.metrics["test_acc"],
        "history": trained.fit.history,
        "device": trained.meta["device"],
        "seconds": trained.fit.seconds,
    }
    (out / f"{mode}.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:4])
