"""Many trainer runs of one small task, and their statistics: what scripts/studies/small_scale_study.py and
scripts/studies/frontier_study.py share. Each run is train.py's Hydra config and the real trainer; a run folder with a
results.json is finished and never trained again, so a stopped study resumes where it stopped."""
from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gsam.evaluation.table1 import load_run
from gsam.runlog import read_metrics

ROOT = Path(__file__).resolve().parents[2]


def overrides(experiment: str, setting: dict, seed: int, val_split: str, out: Path, extra=(), groups=()) -> list[str]:
    """train.py's arguments for one run: the experiment, Hydra group choices (``groups``, e.g. ``sam=every_k``),
    the setting's keys, the seed and the split the final evaluation reads."""
    return [f"+experiment={experiment}", *groups, *(f"{k}={v}" for k, v in setting.items()), f"seed={seed}",
            f"data.val_split={val_split}", f"output_dir={out}", *extra]


def tag(setting: dict) -> str:
    """A run folder's name for a setting: its keys' last parts and values."""
    return "_".join(f"{k.split('.')[-1]}{v:g}" for k, v in setting.items()) or "default"


def _train_inprocess(args: list[str]) -> None:
    """The trainer in this process (train.py's compose): no interpreter start-up, for one job at a time."""
    from hydra import compose, initialize_config_dir

    from gsam.run.experiment import run

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=args)
    run(cfg)


def _train_subprocess(args: list[str], log: Path, threads: int) -> None:
    """train.py as its own process, ``threads`` torch threads, its output in ``log``."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with open(log, "w") as f:
        done = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=env, stdout=f,
                              stderr=subprocess.STDOUT)
    if done.returncode:
        raise RuntimeError(f"train.py {' '.join(args)} failed ({done.returncode}); see {log}")


def train_all(jobs: list[tuple[list[str], Path]], n_jobs: int, threads: int) -> list[float]:
    """Train every (overrides, run folder) without results.json yet, ``n_jobs`` at once (1: in this process);
    the wall seconds of each (0 = reused)."""
    def one(job):
        args, out = job
        if (out / "results.json").exists():
            return 0.0
        out.parent.mkdir(parents=True, exist_ok=True)
        t0, log = time.time(), out.parent / f"{out.name}.log"
        if n_jobs == 1:
            _train_inprocess(args)
        else:
            _train_subprocess(args, log, threads)
        print(f"[study] {out.name}: {time.time() - t0:.0f} s", flush=True)
        return time.time() - t0

    if n_jobs == 1:
        from gsam.studies.cli import torch_threads

        with torch_threads(threads):
            return [one(j) for j in jobs]
    with ThreadPoolExecutor(n_jobs) as pool:
        return list(pool.map(one, jobs))


def read_run(out: Path) -> dict:
    """Top-1 of the run's final evaluation (set "val", whatever split it read), and the last sharpness record."""
    res = load_run(out)["results"]["val"]
    logged = read_metrics(out)
    train, analysis = logged.get("train", []), logged.get("analysis", [])
    last = analysis[-1] if analysis else {}
    return {"top1": res["top1"], "images": res["images"], "train_loss": train[-1]["loss"] if train else math.nan,
            "sigma_max": last.get("sigma_max", math.nan), "surrogate_gap": last.get("surrogate_gap", math.nan),
            "power_iteration_converged": last.get("converged"), "clean_loss": last.get("loss", math.nan)}


def choose(tried: list[dict]) -> dict:
    """The best of the tried settings by minival top-1 (ties: the first in grid order)."""
    best = max(range(len(tried)), key=lambda i: (tried[i]["top1"], -i))
    return {"setting": tried[best]["setting"], "minival_top1": tried[best]["top1"], "tried": tried}


def mean_std(xs) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1); std nan for a single value."""
    xs = [float(x) for x in xs]
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else math.nan


def ci95(xs) -> float:
    """Half-width of the 95% confidence interval of the mean: t_{0.975, n-1} s / sqrt(n) (Student's t, as the
    seeds are few); nan for a single value."""
    from scipy.stats import t

    xs = [float(x) for x in xs]
    return float(t.ppf(0.975, len(xs) - 1) * statistics.stdev(xs) / math.sqrt(len(xs))) if len(xs) > 1 else math.nan


def paired_difference(a: list[dict], b: list[dict]) -> dict:
    """Test top-1 of a minus b, seed by seed (the same seed is the same init and data order for every method):
    the mean difference, its 95% interval, and how many seeds a wins."""
    by_seed = {r["seed"]: r["top1"] for r in b}
    d = [r["top1"] - by_seed[r["seed"]] for r in a if r["seed"] in by_seed]
    return {"mean": statistics.fmean(d), "ci95": ci95(d), "wins": sum(x > 0 for x in d), "n": len(d)}


def paired_share(variant: list[dict], parent: list[dict], base: list[dict], n_boot: int = 10_000,
                 seed: int = 0) -> dict:
    """The share of the parent's gain over ``base`` that a variant keeps, paired by seed:
    mean_s(v_s - b_s) / mean_s(p_s - b_s) over the seeds all three ran (the same seed is the same initialisation and
    data order), and its 95% percentile bootstrap interval over seeds resampled with replacement (the same resampled
    seeds for all three). A resample whose parent gain is <= 0 has no share: it is counted in ``undefined`` and
    widens the interval to infinity on the side it would fall; with few seeds the interval is rough (5 seeds have
    126 distinct resamples)."""
    import numpy as np

    by_seed = [{r["seed"]: r["top1"] for r in rs} for rs in (variant, parent, base)]
    seeds = sorted(set(by_seed[0]) & set(by_seed[1]) & set(by_seed[2]))
    v, p, b = (np.array([m[s] for s in seeds], dtype=float) for m in by_seed)
    gain_v, gain_p = v - b, p - b
    idx = np.random.default_rng(seed).integers(0, len(seeds), size=(n_boot, len(seeds)))
    num, den = gain_v[idx].mean(axis=1), gain_p[idx].mean(axis=1)
    ratio = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.where(num >= 0, np.inf, -np.inf))
    # sample values, not interpolated between them: an infinite end stays infinite instead of nan
    lo, hi = np.percentile(ratio, 2.5, method="lower"), np.percentile(ratio, 97.5, method="higher")
    share = gain_v.mean() / gain_p.mean() if gain_p.mean() > 0 else math.nan
    return {"share": float(share), "ci95": (float(lo), float(hi)), "n": len(seeds), "n_boot": n_boot,
            "undefined": int((den <= 0).sum()), "parent_gain": float(gain_p.mean())}
