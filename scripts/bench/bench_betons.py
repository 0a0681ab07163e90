"""write_betons at scale, without ImageNet: listing and indexing time against the file count, header reading,
writing (img/s, peak memory of the writer and its workers together) and the FFCV loader at 1 and 2 workers,
and write_betons' estimate against the size written.

    python scripts/make_imagenet_tree.py realistic /tmp/real --num 20000 --classes 100
    nice -n 10 python scripts/bench/bench_betons.py --imagenet /tmp/real --out /tmp/bench_betons --workers 1,2

The 1.28 M-path figures use a list of synthetic paths (no files): what write_betons holds for ImageNet's
train folder, and what split_minival and the sidecar cost on it.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
import torch  # noqa: E402

from gsam.data.beton_sizes import read_headers  # noqa: E402
from gsam.data.folder import split_minival  # noqa: E402
from gsam.data.sources import class_folders, folder_samples  # noqa: E402

ILSVRC_TRAIN = 1_281_167


def listing_times(root: Path) -> list[tuple[int, float]]:
    """(files, seconds) of class_folders + folder_samples over 1/4, 1/2 and all of the class folders."""
    classes = class_folders(root / "train")
    rows = []
    for part in (4, 2, 1):
        with tempfile.TemporaryDirectory() as tmp:
            for c in classes[: len(classes) // part]:
                (Path(tmp) / c).symlink_to(root / "train" / c)
            t = time.perf_counter()
            samples = folder_samples(Path(tmp), class_folders(Path(tmp)))
            rows.append((len(samples), time.perf_counter() - t))
    return rows


def million_paths() -> dict:
    """Time and memory of write_betons' lists for ImageNet's train count, on synthetic paths."""
    tracemalloc.start()
    t = time.perf_counter()
    train = [(f"/data/imagenet/train/n{i % 1000:08d}/n{i % 1000:08d}_{i}.JPEG", i % 1000) for i in range(ILSVRC_TRAIN)]
    built = time.perf_counter() - t
    t = time.perf_counter()
    keep, held = split_minival(len(train), 0.01)
    jobs = {"train": [train[i] for i in keep], "minival": [train[i] for i in held]}
    split = time.perf_counter() - t
    t = time.perf_counter()
    side = json.dumps({"files": [p for p, _ in jobs["minival"]]})
    dumped = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"build_s": built, "split_s": split, "sidecar_s": dumped, "sidecar_mb": len(side) / 1e6,
            "peak_mb": peak / 1e6}


def run_measured(cmd: list[str]) -> tuple[float, float, str]:
    """(seconds, peak MB of the process and all its descendants together, stdout) of ``cmd``."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak, root = 0, psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in procs if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.2)
    out, err = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed: {err[-2000:]}")
    return time.perf_counter() - t, peak / 1e6, out


def loader_rate(beton: Path, workers: int, batch: int = 64) -> float:
    spec = importlib.util.spec_from_file_location("bench_data", ROOT / "scripts" / "bench" / "bench_data.py")
    bench_data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_data)
    return bench_data.bench_ffcv(beton, workers, batch)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--imagenet", required=True, type=Path, help="a tree from make_imagenet_tree.py realistic")
    ap.add_argument("--out", required=True, type=Path, help="scratch folder for the betons (removed after)")
    ap.add_argument("--workers", default="1,2")
    args = ap.parse_args(argv)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"load average at start {os.getloadavg()}")
    print("| files listed | seconds | us/file |\n|---|---|---|")
    for n, s in listing_times(args.imagenet):
        print(f"| {n:,} | {s:.2f} | {s / n * 1e6:.0f} |")
    m = million_paths()
    print(f"\n1,281,167 synthetic train paths: built in {m['build_s']:.2f} s, split_minival + train/minival lists "
          f"{m['split_s']:.2f} s, minival sidecar files list {m['sidecar_mb']:.1f} MB in {m['sidecar_s']:.2f} s; "
          f"peak Python memory of all of it {m['peak_mb']:.0f} MB")
    paths = [p for p, _ in folder_samples(args.imagenet / "train", class_folders(args.imagenet / "train"))]
    print("\n| workers | headers img/s | write_betons train img/s | peak MB (all processes) | estimate GB | "
          "written GB | FFCV loader img/s |\n|---|---|---|---|---|---|---|")
    for w in (int(v) for v in args.workers.split(",")):
        t = time.perf_counter()
        read_headers(paths, w)
        headers = len(paths) / (time.perf_counter() - t)
        shutil.rmtree(args.out, ignore_errors=True)
        cmd = [sys.executable, "scripts/write_betons.py", "--imagenet", str(args.imagenet), "--out", str(args.out),
               "--splits", "train", "--workers", str(w), "--no-progress"]
        seconds, peak, out = run_measured(cmd)
        estimate = float(out.split("about ")[1].split(" GB")[0])
        side = json.loads((args.out / "train.json").read_text())
        rate = loader_rate(args.out / "train.beton", w)
        print(f"| {w} | {headers:.0f} | {side['num_images'] / seconds:.0f} | {peak:.0f} | {estimate:.2f} | "
              f"{side['beton']['bytes'] / 1e9:.2f} | {rate:.0f} |", flush=True)
    shutil.rmtree(args.out, ignore_errors=True)
    print(f"\nload average at end {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
