"""Own-data loader at 224 px: throughput against a plain MONAI DataLoader, and peak memory
for a data set bigger than the in-memory limit.

Generates ``--n`` grey PNG images (256x256, 8-bit, 2 classes, 4 images per patient) and
prepares them with the data stage (``dataset.source: folder``, ``image_size: 224``). Then, at
equal work (every image of the training split delivered once as a float32 (B, 1, 224, 224)
batch of ``--batch`` on one thread, ``--epochs`` epochs):

- ours: ``TensorImageDataset`` over the prepared float32 ``.npy`` (streamed with ``pread``
  when the data set exceeds ``dataset.memory_limit_mb``) in a torch ``DataLoader``;
- baseline: ``monai.data.Dataset`` with ``LoadImaged`` (PIL) + ``EnsureChannelFirstd`` +
  ``ScaleIntensityd`` + ``Resized(224)`` in a ``monai.data.DataLoader``, decoding every epoch.

The one-off preparation time is printed too (and amortised over the epochs).
Peak memory: the preparation and each loader run in a fresh process with
``dataset.memory_limit_mb`` far below the prepared size; the peak resident set (VmHWM) above
the process's resident set after imports is printed for the preparation, the streamed loader
and the whole set loaded in memory.

    .venv/bin/python benchmarks/bench_loader.py --n 512 --epochs 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def make_images(root: Path, n: int, size: int = 256) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        label = ("lesion", "normal")[i % 2]
        folder = root / label / f"patient{i // 8:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        coarse = rng.random((8, 8))
        image = (np.kron(coarse, np.ones((size // 8, size // 8))) * 200
                 + rng.random((size, size)) * 55)
        Image.fromarray(image.astype(np.uint8)).save(folder / f"{i}.png")


def _config(raw: Path, limit_mb: float):
    from medsec.config import load_config

    return load_config(overrides=["dataset.source=folder", "dataset.name=bench",
                                  "dataset.path=img", f"dataset.data_dir={raw}",
                                  "dataset.image_size=224", f"dataset.memory_limit_mb={limit_mb}"])


def run_ours(work: Path, limit_mb: float, batch: int, epochs: int) -> dict:
    import torch
    from torch.utils.data import DataLoader

    from medsec.data.prepare import load_prepared
    from medsec.data.types import TensorImageDataset
    from medsec.stages.data import data_source

    torch.set_num_threads(1)
    base = _rss_mb("VmRSS")
    data = load_prepared(data_source(_config(work / "raw", limit_mb)), work / "prepared")
    train = data.splits["train"]
    loader = DataLoader(TensorImageDataset(train), batch_size=batch, shuffle=True, num_workers=0,
                        generator=torch.Generator().manual_seed(0))
    start, seen, checksum = time.perf_counter(), 0, 0.0
    for _ in range(epochs):
        for images, _labels in loader:
            seen += len(images)
            checksum += float(images.mean())
    seconds = time.perf_counter() - start
    return {"images": seen, "seconds": seconds, "storage": data.extra.get("storage"),
            "peak_above_imports_mb": _rss_mb("VmHWM") - base, "checksum": checksum}


def run_baseline(work: Path, batch: int, epochs: int) -> dict:
    import torch
    from monai.data import DataLoader, Dataset, PILReader
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Resized, ScaleIntensityd

    torch.set_num_threads(1)
    base = _rss_mb("VmRSS")
    info = json.loads((work / "prepared" / "dataset.json").read_text())
    files = sorted((work / "raw" / "img").rglob("*.png"))[: info["counts"]["train"]]
    transform = Compose([LoadImaged("image", reader=PILReader(reverse_indexing=False),
                                    image_only=True),
                         EnsureChannelFirstd("image"), ScaleIntensityd("image"),
                         Resized("image", (224, 224), mode="bilinear", anti_aliasing=True)])
    dataset = Dataset([{"image": str(f)} for f in files], transform)
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=0,
                        generator=torch.Generator().manual_seed(0))
    start, seen = time.perf_counter(), 0
    for _ in range(epochs):
        for item in loader:
            seen += len(item["image"])
    seconds = time.perf_counter() - start
    return {"images": seen, "seconds": seconds,
            "peak_above_imports_mb": _rss_mb("VmHWM") - base}


def run_prepare(work: Path, limit_mb: float) -> dict:
    """Prepare the folder (fresh process): seconds and peak resident set above imports."""
    import torch

    from medsec.data.prepare import prepare_dataset
    from medsec.stages.data import data_source

    torch.set_num_threads(1)
    base = _rss_mb("VmRSS")
    start = time.perf_counter()
    prepare_dataset(data_source(_config(work / "raw", limit_mb)), work / "prepared")
    return {"seconds": time.perf_counter() - start,
            "peak_above_imports_mb": _rss_mb("VmHWM") - base}


def _child(mode: str, work: Path, limit_mb: float, batch: int, epochs: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--work", str(work), "--limit-mb",
         str(limit_mb), "--batch", str(batch), "--epochs", str(epochs)],
        capture_output=True, text=True, check=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--limit-mb", type=float, default=16.0)
    parser.add_argument("--child", choices=["prepare", "ours", "memory", "baseline"])
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    if args.child:
        if args.child == "baseline":
            result = run_baseline(args.work, args.batch, args.epochs)
        elif args.child == "prepare":
            result = run_prepare(args.work, args.limit_mb)
        else:
            result = run_ours(args.work, args.limit_mb, args.batch, args.epochs)
        print(json.dumps(result))
        return
    with tempfile.TemporaryDirectory(prefix="medsec-bench-loader-") as tmp:
        work = Path(tmp)
        make_images(work / "raw" / "img", args.n)
        prepared = _child("prepare", work, args.limit_mb, args.batch, args.epochs)
        prepare_s = prepared["seconds"]
        size_mb = sum(f.stat().st_size for f in (work / "prepared").glob("*_images.npy")) / 2**20
        ours = _child("ours", work, args.limit_mb, args.batch, args.epochs)
        memory = _child("memory", work, 10 * size_mb + 1024, args.batch, args.epochs)
        baseline = _child("baseline", work, args.limit_mb, args.batch, args.epochs)
    rate = {k: r["images"] / r["seconds"] for k, r in
            (("ours", ours), ("memory", memory), ("baseline", baseline))}
    amortised = ours["images"] / (ours["seconds"] + prepare_s)
    print(f"images: {args.n} PNG 256x256 -> 224 px, train split {ours['images'] // args.epochs}"
          f", {args.epochs} epoch(s), batch {args.batch}, 1 thread; prepared {size_mb:.1f} MB "
          f"float32 in {prepare_s:.1f} s; dataset.memory_limit_mb {args.limit_mb:g}")
    print(f"throughput (images/s): ours streamed {rate['ours']:.0f}, ours in memory "
          f"{rate['memory']:.0f}, MONAI DataLoader baseline {rate['baseline']:.1f}; ratio "
          f"streamed/baseline {rate['ours'] / rate['baseline']:.1f}x (with the one-off "
          f"preparation amortised over {args.epochs} epoch(s): {amortised:.1f} images/s, "
          f"{amortised / rate['baseline']:.2f}x)")
    print(f"peak memory above imports (MB): streamed {ours['peak_above_imports_mb']:.1f} "
          f"({ours['storage']}), whole set in memory {memory['peak_above_imports_mb']:.1f} "
          f"({memory['storage']}), baseline {baseline['peak_above_imports_mb']:.1f}; prepared "
          f"set {size_mb:.1f} MB; ratio streamed/in-memory "
          f"{ours['peak_above_imports_mb'] / max(memory['peak_above_imports_mb'], 1e-9):.2f}; "
          f"preparing it: {prepared['peak_above_imports_mb']:.1f}")


if __name__ == "__main__":
    main()
