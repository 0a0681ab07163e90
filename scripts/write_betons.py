"""ILSVRC-2012 in its standard layout -> FFCV betons: train (99%), minival (the held-out 1%) and val.

    python scripts/write_betons.py --imagenet /data/imagenet --out /data/betons --workers 32
    python scripts/write_betons.py --imagenet /data/imagenet --val-labels /data/ILSVRC2012_devkit_t12 ...
    python scripts/write_betons.py --imagenet /data/imagenet --out /data/betons --estimate-only
    python scripts/write_betons.py --verify /data/betons        # every byte against the sidecars' BLAKE2b

Before writing anything it reads every image header (no decoding), prints each split's estimated size on
disk and FFCV page size, refuses an image FFCV cannot store and a disk without room for the estimate.

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
import shutil
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gsam.data.beton_check import check_beton  # noqa: E402
from gsam.data.beton_sizes import plan_split, read_headers  # noqa: E402
from gsam.data.betons import ORIGINAL_PIXELS, WriterFailed, read_sidecar, write_beton  # noqa: E402
from gsam.data.folder import split_minival  # noqa: E402
from gsam.data.sources import class_folders, folder_samples, val_samples  # noqa: E402
from gsam.data.write_guard import lock_out_folder, remove_partial_files, stop_on_signals, stop_signal  # noqa: E402


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--imagenet", type=Path, help="folder holding train/<wnid>/ and val/")
    ap.add_argument("--out", type=Path, help="output folder for train/minival/val .beton")
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
    ap.add_argument("--estimate-only", action="store_true", help="print the sizes and checks, write nothing")
    ap.add_argument("--verify", type=Path, metavar="BETONS", help="check every beton in BETONS byte for byte")
    args = ap.parse_args(argv)
    if args.verify is None and (args.imagenet is None or args.out is None):
        ap.error("--imagenet and --out are required (or --verify BETONS)")
    unknown = {s for s in args.splits.split(",") if s} - {"train", "minival", "val"}
    if unknown:
        ap.error(f"--splits: unknown {sorted(unknown)}; choose from train, minival, val")
    return args


def list_splits(args, splits: list[str], classes: list[str]) -> dict:
    """{split: [(path, label)]} for the splits asked for (train and minival from one list, split_minival)."""
    jobs = {}
    if {"train", "minival"} & set(splits):
        train = folder_samples(args.imagenet / "train", classes, "--imagenet train/")
        keep, held = split_minival(len(train), args.minival_fraction)
        jobs["train"] = [train[i] for i in keep]
        jobs["minival"] = [train[i] for i in held]
    if "val" in splits:
        jobs["val"] = val_samples(args.imagenet / "val", classes, args.val_labels)
    return {s: jobs[s] for s in splits}


def plan_all(args, jobs: dict, storage: dict) -> dict:
    """Each split's SplitPlan, printed; ValueError when the disk under --out cannot hold them all."""
    plans = {}
    for split, samples in jobs.items():
        paths = [p for p, _ in samples]
        opts = storage[split]
        plans[split] = plan = plan_split(paths, read_headers(paths, args.workers), workers=args.workers,
                                         max_resolution=opts["max_resolution"], write_mode=opts["write_mode"],
                                         compress_probability=opts["compress_probability"])
        print(f"[write_betons] {split}: {plan.images:,} images, about {plan.estimate_bytes / 1e9:.2f} GB on disk "
              f"({plan.estimate_bytes / max(plan.images, 1) / 1e3:.0f} kB/image), page {plan.page_size >> 20} MiB; "
              f"largest {plan.largest}", flush=True)
    need = sum(p.estimate_bytes for p in plans.values())
    args.out.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(args.out).free
    print(f"[write_betons] {need / 1e9:.2f} GB needed in all, {free / 1e9:.2f} GB free under {args.out}", flush=True)
    if need > free:
        raise ValueError(f"--out {args.out}: {free / 1e9:.2f} GB free, the betons need about {need / 1e9:.2f} GB; "
                         "free some space, write elsewhere, or lower --max-side / raise --compress-probability")
    return plans


def verify(folder: Path) -> int:
    betons = sorted(folder.glob("*.beton"))
    if not betons:
        raise FileNotFoundError(f"--verify: no .beton files in {folder}")
    for beton in betons:
        check_beton(beton, read_sidecar(beton).get("beton"), full=True)
        print(f"[write_betons] {beton}: size, fingerprint and BLAKE2b as written")
    return 0


def write_all(args, jobs: dict, storage: dict, plans: dict, classes: list[str]) -> None:
    for split, samples in jobs.items():
        if not samples:
            print(f"[write_betons] {split}: empty (minival fraction {args.minival_fraction}), not written")
            continue
        meta = write_beton(args.out / f"{split}.beton", samples, classes, **storage[split], workers=args.workers,
                           keep_files=split != "train", progress=not args.no_progress,
                           source=str(args.imagenet.resolve()), plan=plans[split])
        print(f"[write_betons] {args.out / f'{split}.beton'}: {meta['num_images']} images, {len(classes)} classes, "
              f"{len(meta['skipped'])} skipped, {meta['beton']['bytes'] / 1e9:.2f} GB", flush=True)


def write(args, splits: list[str], storage: dict) -> None:
    """List, plan and write the splits, holding --out's lock (one writer per folder) from the listing on."""
    classes = class_folders(args.imagenet / "train", "--imagenet train/")
    if args.estimate_only:
        plan_all(args, list_splits(args, splits, classes), storage)
        return
    with lock_out_folder(args.out):
        for path in remove_partial_files(args.out):
            print(f"[write_betons] removed {path}, left by a writer that was killed", flush=True)
        jobs = list_splits(args, splits, classes)
        write_all(args, jobs, storage, plan_all(args, jobs, storage), classes)


def main(argv=None) -> int:
    args = parse_args(argv)
    splits = [s for s in args.splits.split(",") if s]
    train_storage = {"max_resolution": args.max_side or None, "write_mode": args.write_mode,
                     "jpeg_quality": args.jpeg_quality, "compress_probability": args.compress_probability}
    storage = {s: train_storage if s == "train" else ORIGINAL_PIXELS for s in splits}
    try:
        if args.verify is not None:
            return verify(args.verify)
        with stop_on_signals():  # SIGTERM/SIGHUP unwind as Ctrl-C does: workers stopped, .tmp removed, lock released
            write(args, splits, storage)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (WriterFailed, KeyboardInterrupt) as e:  # a worker's failure, or Ctrl-C, SIGTERM, SIGHUP (Stopped)
        signum = stop_signal() or (signal.SIGINT if isinstance(e, KeyboardInterrupt) else None)
        if signum is None:
            print(f"error: {e}", file=sys.stderr)
            return 1
        # the workers got the signal too (a process group's): their deaths are the signal's, not a failure
        print(f"error: stopped by {signal.Signals(signum).name}; the workers are stopped and no partial beton is "
              "left", file=sys.stderr)
        return 128 + signum
    return 0


if __name__ == "__main__":
    sys.exit(main())
