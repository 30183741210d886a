"""GPU check: every stage's model code on one device, with timings.

    python benchmarks/gpu_check.py                 # on the GPU (ConfigError without one)
    python benchmarks/gpu_check.py --device cpu    # smoke check on the CPU (~1-2 CPU minutes)

Stages (small SYNTHETIC phantoms, 32x32): classifier training with ``--precision``
(default bf16-mixed), PGD-10 attack, fast-FGSM adversarial training + Mahalanobis detector
(defense), DP-SGD (Opacus, float32), one federated client's local update, UNet segmentation
training + SegPGD. Each stage asserts that its model ran on the requested device, prints its
wall time and a sanity figure (accuracy, robust accuracy, epsilon, Dice); ``--json`` writes
them to a file. Exit code 0 when every stage ran on the device.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("gpu", "cpu", "auto"), default="gpu")
    parser.add_argument("--precision", default="bf16-mixed",
                        choices=("32", "16-mixed", "bf16-mixed"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--n-train", type=int, default=512)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    import torch

    from medsec.attacks.pgd import PGD
    from medsec.data.phantoms import load_phantoms, write_phantoms
    from medsec.defenses.detectors import MahalanobisDetector
    from medsec.defenses.training import AdversarialBatches
    from medsec.federated.local import LocalTraining, train_locally
    from medsec.privacy.config import DPConfig
    from medsec.privacy.training import DPStrategy
    from medsec.segmentation.attacks import SegPGD
    from medsec.segmentation.config import SegmentationConfig
    from medsec.segmentation.data import from_loaded
    from medsec.segmentation.job import evaluate_segmenter, train_segmenter
    from medsec.training.config import ClassifierRecipe, Hardware, TrainConfig, use_hardware
    from medsec.training.devices import model_device, torch_device
    from medsec.training.job import build_module, evaluate_classifier, train_classifier

    hardware = Hardware(accelerator=args.device, precision=args.precision)
    use_hardware(hardware)  # every fit and model load not given one (segmentation, federated)
    want = torch_device(args.device).type
    print(f"torch {torch.__version__}, device {want}"
          + (f" ({torch.cuda.get_device_name(0)})" if want == "cuda" else "")
          + f", precision {args.precision}")
    tmp = Path(tempfile.mkdtemp(prefix="medsec-gpu-check-"))
    data = load_phantoms(write_phantoms(tmp / "phantoms.npz", args.n_train, 128, 256, 32, 0))
    test_x, test_y = data.splits["test"].tensors()
    rows: list[dict] = []

    def stage(name: str, fn: Callable[[], tuple[torch.nn.Module, dict]]) -> None:
        if want == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        model, figures = fn()
        if want == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        device = model_device(model).type
        rows.append({"stage": name, "device": device, "seconds": round(seconds, 2), **figures})
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in figures.items())
        print(f"{name:<22} {device:<5} {seconds:8.2f} s   {shown}", flush=True)

    recipe = ClassifierRecipe(train=TrainConfig(epochs=args.epochs, batch_size=64,
                                                accelerator=args.device,
                                                precision=args.precision))
    trained = {}

    def train() -> tuple:
        result = train_classifier(recipe, data)
        trained["model"] = result.model
        acc = evaluate_classifier(result.model, data.splits["test"], 2).metrics["test_acc"]
        return result.model, {"test_acc": acc, "precision": result.meta["precision"]}

    def attack() -> tuple:
        model = trained["model"]
        adv = PGD(model, eps=4 / 255, alpha=1 / 255, steps=10, norm="linf")(test_x, test_y)
        acc = evaluate_classifier(model, data.splits["test"], 2).metrics["test_acc"]
        with torch.no_grad():
            robust = (model(adv.to(model_device(model))).argmax(1).cpu() == test_y)
        return model, {"clean_acc": acc, "robust_acc": float(robust.float().mean())}

    def defense() -> tuple:
        module = build_module(recipe, data)
        module.batch_transform = AdversarialBatches.fast_fgsm(4 / 255, seed=0)
        result = train_classifier(recipe, data, module=module)
        train_x, train_y = data.splits["train"].tensors()
        detector = MahalanobisDetector(result.model).fit(train_x, train_y)
        detector.calibrate(data.splits["val"].tensors()[0], fpr=0.05)
        flagged = float(detector.flag(test_x).float().mean())
        return result.model, {"flagged_clean": flagged}

    def dp() -> tuple:
        dp_recipe = ClassifierRecipe(
            model=recipe.model.model_copy(update={"norm": "group"}),
            train=recipe.train.model_copy(update={"precision": "32"}))
        result = train_classifier(dp_recipe, data, strategy=DPStrategy(
            DPConfig(enabled=True, target_epsilon=8.0, max_grad_norm=1.0)))
        return result.model, {"epsilon": float(result.meta["privacy"]["epsilon"])}

    def federated_client() -> tuple:
        net = build_module(recipe, data).net
        local = train_locally(net, data.splits["train"], data.splits["val"], 2,
                              LocalTraining(epochs=1, batch_size=64, lr=1e-3), seed=0,
                              proximal_mu=0.01)
        return net, {"train_loss": local.train_loss}

    def segmentation() -> tuple:
        cfg = SegmentationConfig(epochs=max(args.epochs, 3), max_train=96, max_eval=48)
        seg = from_loaded(data, cfg.max_train, cfg.max_eval)
        result = train_segmenter(cfg, seg)
        test = seg.splits["test"]
        dice = evaluate_segmenter(result.model, test, seg.num_classes)
        images = torch.from_numpy(test.images[:32]).float()
        masks = torch.from_numpy(test.masks[:32]).long()
        SegPGD(result.model, eps=8 / 255, alpha=2 / 255, steps=10, norm="linf")(images, masks)
        key = next((k for k in dice if "dice" in k and "background" not in k),
                   next(k for k in dice if "dice" in k))
        return result.model, {key: dice[key]}

    for name, fn in (("train " + args.precision, train), ("attack pgd-10", attack),
                     ("defense fast-fgsm-at", defense), ("dp-sgd", dp),
                     ("federated client", federated_client), ("segmentation unet", segmentation)):
        stage(name, fn)
    ok = all(row["device"] == want for row in rows)
    print(f"total {sum(r['seconds'] for r in rows):.1f} s; every stage on {want}: {ok}")
    if args.json:
        args.json.write_text(json.dumps({"device": want, "precision": args.precision,
                                         "stages": rows}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
