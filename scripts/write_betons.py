"""ILSVRC-2012 in its standard layout -> FFCV betons: train (99%), minival (the held-out 1%) and val.

    python scripts/write_betons.py --imagenet /data/imagenet --out /data/betons --workers 32
    python scripts/write_betons.py --imagenet /data/imagenet --val-labels /data/ILSVRC2012_devkit_t12 ...

The minival split is the folder loader's (data/folder.py: split_minival, a fixed permutation with seed 0
over the sorted train files), so data.loader=ffcv and data.loader=folder hold out the same images.
The train beton takes the storage options; their defaults are ffcv-imagenet's README command
(`write_dataset.sh 400 0.10 90`): max side 400 px, 10% of the images stored as JPEG q90, the rest raw (larger
on disk, decoded much faster; docs/benchmarks.md). That changes the training pixels a little, as it did for
ffcv-imagenet. minival and val, the images accuracy is measured on, are always stored as the original images
(decoded, raw, full size: no resize, no re-encoding), pixel for pixel what the folder loader decodes.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gsam.data.betons import ORIGINAL_PIXELS, write_beton  # noqa: E402
from gsam.data.folder import split_minival  # noqa: E402
from gsam.data.sources import class_folders, folder_samples, val_samples  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--imagenet", required=True, type=Path, help="folder holding train/<wnid>/ and val/")
    ap.add_argument("--out", required=True, type=Path, help="output folder for train/minival/val .beton")
    ap.add_argument("--val-labels", type=Path, help="flat val only: devkit folder or LOC_val_solution.csv")
    ap.add_argument("--splits", default="train,minival,val", help="comma list of train, minival, val")
    ap.add_argument("--minival-fraction", type=float, default=0.01)
    ap.add_argument("--max-side", type=int, default=400, help="train: longer side resized down to this (0: keep)")
    ap.add_argument("--write-mode", default="proportion", choices=["raw", "jpg", "proportion", "smart"],
                    help="train only (minival and val are stored raw at full size)")
    ap.add_argument("--jpeg-quality", type=int, default=90, help="train only")
    ap.add_argument("--compress-probability", type=float, default=0.1,
                    help="train, write-mode proportion: share stored as JPEG")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    splits = [s for s in args.splits.split(",") if s]
    unknown = set(splits) - {"train", "minival", "val"}
    if unknown:
        ap.error(f"--splits: unknown {sorted(unknown)}; choose from train, minival, val")
    train_storage = {"max_resolution": args.max_side or None, "write_mode": args.write_mode,
                     "jpeg_quality": args.jpeg_quality, "compress_probability": args.compress_probability}
    try:
        classes = class_folders(args.imagenet / "train", "--imagenet train/")
        jobs = {}
        if {"train", "minival"} & set(splits):
            train = folder_samples(args.imagenet / "train", classes, "--imagenet train/")
            keep, held = split_minival(len(train), args.minival_fraction)
            jobs["train"] = [train[i] for i in keep]
            jobs["minival"] = [train[i] for i in held]
        if "val" in splits:
            jobs["val"] = val_samples(args.imagenet / "val", classes, args.val_labels)
        for split in splits:
            if not jobs[split]:
                print(f"[write_betons] {split}: empty (minival fraction {args.minival_fraction}), not written")
                continue
            storage = train_storage if split == "train" else ORIGINAL_PIXELS
            meta = write_beton(args.out / f"{split}.beton", jobs[split], classes, **storage, workers=args.workers,
                               keep_files=split != "train", progress=not args.no_progress,
                               source=str(args.imagenet.resolve()))
            print(f"[write_betons] {args.out / f'{split}.beton'}: {meta['num_images']} images, "
                  f"{len(classes)} classes, {len(meta['skipped'])} skipped")
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
