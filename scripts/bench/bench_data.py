"""Images/s per CPU core of the training pipeline: FFCV (data.loader=ffcv) vs ImageFolder + PIL (folder),
on the same JPEGs, in one run. Target: FFCV >= 3x per core.

    python scripts/bench/bench_data.py                       # 1,000 ImageNet-sized JPEGs made from real photos
    python scripts/bench/bench_data.py --images /data/imagenet/train --limit 5000   # on real ImageNet files

Both pipelines do the recipe's train transform at 224 (random-resized crop, flip, normalise) and deliver
float batches; FFCV reads a beton written with write_betons.py's defaults (max side 400, 10% JPEG q90).
Each pipeline runs with W decoding workers (processes for the DataLoader, threads for FFCV) and is timed
on its second pass (the first pays for numba's compilation and worker start-up); per core = img/s / W.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from gsam.data.betons import write_beton  # noqa: E402
from gsam.data.folder import ImageList, SeededTransforms, ShardSampler, train_transform  # noqa: E402
from gsam.data.sources import class_folders, folder_samples  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def make_jpegs(root: Path, n: int, classes: int = 10) -> None:
    """n JPEGs of ImageNet's typical size (500x375 or 375x500, q90) cut from scikit-learn's sample photos."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(0)
    for i in range(n):
        src = photos[i % len(photos)]
        h, w = (375, 500) if i % 3 else (500, 375)
        scale = rng.uniform(0.6, 1.0)
        ch, cw = int(src.shape[0] * scale), int(src.shape[1] * scale)
        y, x = rng.integers(0, src.shape[0] - ch + 1), rng.integers(0, src.shape[1] - cw + 1)
        img = Image.fromarray(src[y:y + ch, x:x + cw]).resize((w, h), Image.BILINEAR)
        folder = root / f"n{i % classes:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        img.save(folder / f"img_{i:06d}.JPEG", quality=90)


def time_passes(make_iter, passes: int = 2) -> float:
    """Images/s of the last pass."""
    rate = 0.0
    for _ in range(passes):
        n, t = 0, time.perf_counter()
        for x, _ in make_iter():
            n += x.shape[0]
        rate = n / (time.perf_counter() - t)
    return rate


def bench_folder(samples, workers: int, batch: int) -> float:
    from torch.utils.data import DataLoader

    ds = SeededTransforms(ImageList(samples, substitute=True), train_transform(224, MEAN, STD), seed=0)
    sampler = ShardSampler(len(ds), rank=0, world=1, shuffle=True, seed=0, batch=batch, drop_last=True,
                           with_epoch=True)
    loader = DataLoader(ds, batch_size=batch, sampler=sampler, drop_last=True, num_workers=workers,
                        persistent_workers=True, prefetch_factor=4)
    return time_passes(lambda: iter(loader))


def bench_ffcv(beton: Path, workers: int, batch: int) -> float:
    from gsam.data.ffcv_loaders import FFCVLoader

    loader = FFCVLoader(beton, train=True, img_size=224, mean=MEAN, std=STD, batch=batch, rank=0, world=1, seed=0,
                        num_workers=workers, device=torch.device("cpu"), channels_last=False, min_crop_scale=0.05,
                        crop_pct=224 / 256, os_cache=True)
    return time_passes(lambda: iter(loader))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, help="a folder of <class>/*.JPEG (default: make 1,000)")
    ap.add_argument("--num", type=int, default=1000, help="images to make when --images is not given")
    ap.add_argument("--limit", type=int, default=0, help="use at most this many of --images (0: all)")
    ap.add_argument("--workers", default="1,2", help="comma list of worker counts to measure")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--max-side", type=int, default=400, help="beton: as write_betons.py --max-side")
    ap.add_argument("--compress-probability", type=float, default=0.1, help="beton: share stored as JPEG")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = args.images
        if root is None:
            root = tmp / "jpegs"
            make_jpegs(root, args.num)
        classes = class_folders(root, "--images")
        samples = folder_samples(root, classes, "--images")
        if args.limit:
            samples = [samples[i] for i in np.random.default_rng(0).permutation(len(samples))[: args.limit]]
        beton = tmp / "bench.beton"
        write_beton(beton, samples, classes, max_resolution=args.max_side, write_mode="proportion",
                    jpeg_quality=90, compress_probability=args.compress_probability, workers=os.cpu_count() or 1, keep_files=False, progress=False)
        print(f"# {len(samples)} images from {root if args.images else 'generated 500x375 JPEGs'}; beton max side "
              f"{args.max_side}, {args.compress_probability:.0%} JPEG; "
              f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
        print("| workers | folder+PIL img/s | per core | FFCV img/s | per core | FFCV / folder |")
        print("|---|---|---|---|---|---|")
        for w in (int(v) for v in args.workers.split(",")):
            folder = bench_folder(samples, w, args.batch)
            ffcv = bench_ffcv(beton, w, args.batch)
            print(f"| {w} | {folder:.0f} | {folder / w:.0f} | {ffcv:.0f} | {ffcv / w:.0f} | {ffcv / folder:.2f}x |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
