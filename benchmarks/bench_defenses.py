"""MedSec defenses against ART's implementations on PneumoniaMNIST (same data, same network).

1. PGD adversarial training: ours (``AdversarialBatches`` as the batch transform of the one
   Lightning training loop) vs ART's ``AdversarialTrainerMadryPGD``, both from the same
   initial weights, same epochs, batch size, Adam learning rate and PGD settings (L-inf eps,
   step, iterations, one random start). Both models are then scored with the same attack
   (medsec PGD-10); training time is wall-clock.
2. Input transformations on the undefended model: bit depth, JPEG and median filter (ART's
   FeatureSqueezing, JpegCompression and SpatialSmoothing). ART differentiates through numpy
   preprocessors with the identity (BPDA), so its PGD is compared with our BPDA-PGD, both
   deterministic (no random start, final iterate); adversarial images of both are scored on
   our defended model. Plain PGD (true, zero gradient) is shown for contrast.

    .venv/bin/python benchmarks/bench_defenses.py --n-train 2000 --epochs 3 --n-test 300
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from medsec.attacks import PGD
from medsec.attacks.config import parse_epsilon
from medsec.data.registry import load_dataset
from medsec.data.types import ImageDataset
from medsec.defenses.training import AdversarialBatches
from medsec.defenses.transforms import JPEG, BitDepth, MedianFilter, Preprocessed
from medsec.models.factory import build_classifier
from medsec.training.fit import fit_classifier, make_loader, seed_everything
from medsec.training.job import channel_stats
from medsec.training.module import ClassifierModule

ROOT = Path(__file__).resolve().parents[1]


class _Float32(nn.Module):
    """ART's FeatureSqueezing hands float64 arrays to the model: cast them back."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x.float())


def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    model.eval()
    with torch.inference_mode():
        return float(torch.cat([model(x[i : i + 256]).argmax(1)
                                for i in range(0, len(x), 256)]).eq(y).float().mean())


def art_classifier(model: nn.Module, lr: float | None = None, preprocessors=()):
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(
        model=_Float32(model), loss=nn.CrossEntropyLoss(), input_shape=(1, 28, 28),
        nb_classes=2, clip_values=(0.0, 1.0),
        optimizer=torch.optim.Adam(model.parameters(), lr=lr) if lr else None,
        preprocessing_defences=list(preprocessors) or None,
    )


def fit(net: nn.Module, train: ImageDataset, val: ImageDataset, args, transform=None) -> float:
    module = ClassifierModule(net, 2, lr=args.lr, batch_transform=transform)
    start = time.perf_counter()
    fit_classifier(module, make_loader(train, args.batch_size, True, 0),
                   make_loader(val, 512, False, 0), args.epochs, 0, select_best=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "datasets"))
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--n-test", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eps", default="4/255")
    parser.add_argument("--at-steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    eps = parse_epsilon(args.eps)
    from art.attacks.evasion import ProjectedGradientDescent
    from art.defences.preprocessor import FeatureSqueezing, JpegCompression, SpatialSmoothing
    from art.defences.trainer import AdversarialTrainerMadryPGD

    data = load_dataset("pneumoniamnist", args.data_dir)
    train = data.splits["train"].head(args.n_train)
    val = data.splits["val"]
    x, y = data.splits["test"].head(args.n_test).tensors()
    mean, std = channel_stats(train.images)
    seed_everything(0)
    init = build_classifier("small_cnn", 1, 2, (28, 28), mean=mean, std=std).state_dict()

    def fresh() -> nn.Module:
        net = build_classifier("small_cnn", 1, 2, (28, 28), mean=mean, std=std)
        net.load_state_dict(copy.deepcopy(init))
        return net

    def pgd_acc(model: nn.Module) -> float:
        return accuracy(model, PGD(model.eval(), eps=eps, alpha=eps / 4, steps=10)(x, y), y)

    print(f"PneumoniaMNIST: {len(train)} train / {len(x)} test images, eps {args.eps}, "
          f"{args.epochs} epochs, {args.threads} thread(s)")
    plain = fresh()
    t_plain = fit(plain, train, val, args)
    ours = fresh()
    alpha = eps / 4
    t_ours = fit(ours, train, val, args, AdversarialBatches(eps, alpha, args.at_steps, seed=0))
    art_net = fresh()
    art_net.train()
    trainer = AdversarialTrainerMadryPGD(
        art_classifier(art_net, args.lr), nb_epochs=args.epochs, batch_size=args.batch_size,
        eps=eps, eps_step=alpha, max_iter=args.at_steps, num_random_init=1)
    start = time.perf_counter()
    trainer.fit(*(a.numpy() for a in train.tensors()))
    t_art = time.perf_counter() - start
    print("\n1. PGD adversarial training (robust acc: medsec PGD-10, same attack for all)")
    print(f"{'model':28s} {'clean acc':>9s} {'PGD acc':>8s} {'train s':>8s}")
    for name, model, seconds in (("undefended", plain, t_plain), ("medsec PGD-AT", ours, t_ours),
                                 ("ART AdversarialTrainerMadryPGD", art_net, t_art)):
        print(f"{name:28s} {accuracy(model, x, y):9.3f} {pgd_acc(model):8.3f} {seconds:8.1f}")

    print("\n2. Transformations on the undefended model (robust acc on our defended model)")
    print(f"{'transform':12s} {'clean':>6s} {'PGD':>6s} {'BPDA ours':>9s} {'BPDA ART':>9s} "
          f"{'ours s':>7s} {'ART s':>7s}")
    cases = (("bit_depth4", BitDepth(4), FeatureSqueezing(clip_values=(0.0, 1.0), bit_depth=4)),
             ("jpeg50", JPEG(50), JpegCompression(clip_values=(0.0, 1.0), quality=50,
                                                  channels_first=True)),
             ("median3", MedianFilter(3), SpatialSmoothing(window_size=3, channels_first=True)))
    for name, ours_t, art_t in cases:
        defended = Preprocessed(plain, ours_t)
        plain_pgd = PGD(defended, eps=eps, alpha=alpha, steps=10, random_start=False,
                        early_stop=False)(x, y)
        start = time.perf_counter()
        ours_adv = PGD(defended.with_bpda(), eps=eps, alpha=alpha, steps=10, random_start=False,
                       early_stop=False)(x, y)
        t_o = time.perf_counter() - start
        start = time.perf_counter()
        art_adv = ProjectedGradientDescent(
            art_classifier(copy.deepcopy(plain).eval(), preprocessors=[art_t]), eps=eps,
            eps_step=alpha, max_iter=10, num_random_init=0, batch_size=256, verbose=False,
        ).generate(x.numpy(), y.numpy())
        t_a = time.perf_counter() - start
        art_adv_t = torch.from_numpy(np.asarray(art_adv, dtype=np.float32))
        print(f"{name:12s} {accuracy(defended, x, y):6.3f} {accuracy(defended, plain_pgd, y):6.3f}"
              f" {accuracy(defended, ours_adv, y):9.3f} {accuracy(defended, art_adv_t, y):9.3f}"
              f" {t_o:7.1f} {t_a:7.1f}")


if __name__ == "__main__":
    main()
