"""Small-scale study: vanilla, SAM, GSAM and XSAM on a small real task where sharpness-aware training is known
to help: the embedded digits with 40% of the train labels wrong (Foret et al. 2021 §4), a small ViT trained for
a fixed 60 epochs without early stopping, no crop augmentation (configs/experiment/study_*.yaml,
configs/data/study.yaml).

Every run is the real trainer (train.py's Hydra config, the folder data path, the evaluators, the
sharpness monitor). Two phases:
  1. selection, at --select-seed, evaluated on minival (a clean 20% held out of train): rho for SAM and
     XSAM; GSAM as the GSAM paper runs it, its own rho_max on the same grid with rho_t decaying with the lr
     to --gsam-rho-min, at alpha --gsam-rho-alpha, then alpha over --alphas at its chosen rho_max (App. B.1:
     rho, then alpha); each method keeps its best point.
  2. report: the chosen setting of each method, and the ablation "constant-rho GSAM at SAM's rho" (SAM's rho
     held constant with GSAM's alpha, the GSAM paper's Table 6 ablation), at every --seeds, evaluated on val
     (clean, never used for a choice): test top-1 with its 95% interval, paired differences by seed, and
     after the last epoch the surrogate gap h and sigma_max at one radius for every method.
Writes <out>/<report>.md (table), .json (every number) and .png (one plot). Finished runs are reused, so
a second report with other seeds reuses the selection.

    PYTHONPATH=. python scripts/studies/small_scale_study.py --seeds 0 1 2 3 4 --jobs 2
    PYTHONPATH=. python scripts/studies/small_scale_study.py --seeds 5 6 7 8 9 --jobs 2 --report study_seeds5to9
    PYTHONPATH=. python scripts/studies/small_scale_study.py --override train.device=cuda   # on a GPU
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gsam.evaluation.tables import TABLE1_METHODS as METHODS  # noqa: E402  (methods: vanilla, sam, gsam, xsam)
from gsam.studies.study_runs import (ci95, choose, mean_std, overrides as run_overrides, paired_difference,  # noqa: E402
                                     read_run, tag, train_all)


def grid(method: str, rhos, gsam_alpha: float, gsam_rho_min: float) -> list[dict]:
    """The first stage of the selection: rho for SAM and XSAM (probe radius 2 rho, as configs/sam/xsam.yaml);
    for GSAM its own rho_max on the same grid, rho_t decaying with the lr to ``gsam_rho_min`` (eq. 6 of the
    GSAM paper), at alpha ``gsam_alpha`` (App. B.1's order: rho for SAM and GSAM, then alpha); nothing for
    vanilla."""
    if method == "vanilla":
        return [{}]
    if method == "gsam":
        return [{"sam.rho_max": r, "sam.rho_min": gsam_rho_min, "sam.alpha": gsam_alpha} for r in rhos]
    if method == "xsam":
        return [{"sam.rho_max": r, "sam.rho_probe": round(2 * r, 6)} for r in rhos]
    return [{"sam.rho_max": r} for r in rhos]


def alpha_grid(rho_setting: dict, alphas) -> list[dict]:
    """The second stage, GSAM only: every alpha of App. B.1's grid not yet run, at GSAM's chosen rho_max."""
    return [{**rho_setting, "sam.alpha": a} for a in alphas if a != rho_setting["sam.alpha"]]


def ablation(chosen: dict) -> dict:
    """Constant-rho GSAM at SAM's rho: SAM's chosen rho as rho_max = rho_min, with GSAM's chosen alpha. It
    separates GSAM's ascent step from its rho schedule: the paper's Table 6 ablation (constant rho + ascent)."""
    rho = chosen["sam"]["setting"]["sam.rho_max"]
    return {"sam.rho_max": rho, "sam.rho_min": rho, "sam.alpha": chosen["gsam"]["setting"]["sam.alpha"]}


ABLATION = "gsam_const_rho_at_sam_rho"  # reported under this name, trained with study_gsam
REPORTED = (*METHODS, ABLATION)


def overrides(method: str, setting: dict, seed: int, val_split: str, out: Path, extra) -> list[str]:
    """The ablation trains with study_gsam; every other method with its own study experiment."""
    return run_overrides(f"study_{'gsam' if method == ABLATION else method}", setting, seed, val_split, out, extra)


def _run_stage(out: Path, plan: dict, args) -> float:
    jobs = [(overrides(m, s, args.select_seed, "minival", d, args.override), d) for m in plan for s, d in plan[m]]
    return sum(train_all(jobs, args.jobs, args.threads))


def select(out: Path, args) -> dict:
    """Phase 1: every grid point once at --select-seed on minival; each method's best setting. GSAM's alpha
    stage waits for its own choice of rho_max."""
    where = lambda m, s: (s, out / "select" / f"{m}_{tag(s)}")  # noqa: E731
    plan = {m: [where(m, s) for s in grid(m, args.rhos, args.gsam_rho_alpha, args.gsam_rho_min)] for m in METHODS}
    seconds = _run_stage(out, plan, args)
    tried = {m: [{"setting": s, "run": str(d), **read_run(d)} for s, d in plan[m]] for m in METHODS}
    alphas = [where("gsam", s) for s in alpha_grid(choose(tried["gsam"])["setting"], args.alphas)]
    seconds += _run_stage(out, {"gsam": alphas}, args)
    tried["gsam"] += [{"setting": s, "run": str(d), **read_run(d)} for s, d in alphas]
    return {"chosen": {m: choose(tried[m]) for m in METHODS}, "seconds": seconds}


def report_runs(out: Path, chosen: dict, args) -> dict:
    """Phase 2: each method's chosen setting, and the ablation, at every --seeds, evaluated on val (the test
    set). Seed after seed, so that a study stopped early has the same seeds for every method."""
    settings = {**{m: chosen[m]["setting"] for m in METHODS}, ABLATION: ablation(chosen)}
    dirs = {(m, s): out / "runs" / f"{m}_{tag(settings[m])}_seed{s}" for s in args.seeds for m in REPORTED}
    jobs = [(overrides(m, settings[m], s, "val", d, args.override), d) for (m, s), d in dirs.items()]
    seconds = train_all(jobs, args.jobs, args.threads)
    return {"settings": settings,
            "runs": {m: [{"seed": s, "run": str(dirs[m, s]), **read_run(dirs[m, s])} for s in args.seeds]
                     for m in REPORTED}, "seconds": sum(seconds)}


def summary(runs: dict) -> dict:
    keys = ("top1", "surrogate_gap", "sigma_max", "train_loss")
    stats = {m: {k: mean_std([r[k] for r in rs]) for k in keys} for m, rs in runs.items()}
    for m, rs in runs.items():
        stats[m]["top1_ci95"] = ci95([r["top1"] for r in rs])
    return stats


PAIRS = (("gsam", "sam"), ("gsam", ABLATION), (ABLATION, "sam"), ("xsam", "sam"), ("sam", "vanilla"))


def differences(runs: dict) -> dict:
    """Test top-1 of a minus b, seed by seed (the same seed is the same init and data order for every method):
    the mean difference, its 95% interval, and how many seeds a wins."""
    return {f"{a} - {b}": paired_difference(runs[a], runs[b]) for a, b in PAIRS}


def _setting(setting: dict) -> str:
    return ", ".join(f"{k.split('.')[-1]} {v:g}" for k, v in setting.items()) or "—"


def markdown(stats: dict, settings: dict, chosen: dict, diffs: dict, n: int, rho: float) -> str:
    rows = ["| method | setting (chosen on minival) | minival top-1 | test top-1 (%) | 95% interval | h at ρ = "
            f"{rho:g} | σ_max | final train loss |", "|---|---|---|---|---|---|---|---|"]
    for m, s in stats.items():
        minival = f"{chosen[m]['minival_top1']:.2f}" if m in chosen else "— (not selected)"
        mean, ci = s["top1"][0], s["top1_ci95"]
        rows.append(f"| {m} | {_setting(settings[m])} | {minival} | {mean:.2f} ± {s['top1'][1]:.2f}"
                    f" | [{mean - ci:.2f}, {mean + ci:.2f}]"
                    f" | {s['surrogate_gap'][0]:.4f} ± {s['surrogate_gap'][1]:.4f}"
                    f" | {s['sigma_max'][0]:.1f} ± {s['sigma_max'][1]:.1f}"
                    f" | {s['train_loss'][0]:.3f} ± {s['train_loss'][1]:.3f} |")
    rows += ["", "| difference of test top-1 (same seeds) | mean | 95% interval | seeds won |", "|---|---|---|---|"]
    for k, d in diffs.items():
        rows.append(f"| {k} | {d['mean']:+.2f} | [{d['mean'] - d['ci95']:+.2f}, {d['mean'] + d['ci95']:+.2f}]"
                    f" | {d['wins']} of {d['n']} |")
    return "\n".join(rows) + (f"\n\nmean ± sample std over {n} seeds, 95% interval of the mean (Student's t); "
                              "test = the clean val split.\n")


def selection_markdown(chosen: dict, seed: int) -> str:
    """Every setting the selection tried, with its minival top-1 (one run each, seed ``seed``)."""
    rows = ["| method | setting | minival top-1 (%) | chosen |", "|---|---|---|---|"]
    for m, c in chosen.items():
        for t in c["tried"]:
            mark = "yes" if t["setting"] == c["setting"] else ""
            rows.append(f"| {m} | {_setting(t['setting'])} | {t['top1']:.2f} | {mark} |")
    images = next(iter(chosen.values()))["tried"][0]["images"]
    return "\n".join(rows) + f"\n\nselection runs: seed {seed}, evaluated on minival ({images} clean images).\n"


def plot(runs: dict, stats: dict, path: Path, title: str) -> None:
    """One figure: test top-1, h and sigma_max per method, every seed as a dot, mean ± std as a bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for ax, (key, label) in zip(axes, (("top1", "test top-1 (%)"), ("surrogate_gap", "surrogate gap h (after the last epoch)"),
                                       ("sigma_max", "σ_max (dominant Hessian eigenvalue)"))):
        for i, m in enumerate(runs):
            ax.scatter([i] * len(runs[m]), [r[key] for r in runs[m]], color="0.6", s=14, zorder=2)
            ax.errorbar([i], [stats[m][key][0]], yerr=[stats[m][key][1]], fmt="o", capsize=5, color=f"C{i}", zorder=3)
        ax.set(xticks=range(len(runs)), xticklabels=list(runs), ylabel=label)
        if key == "sigma_max":
            values = [r[key] for rs in runs.values() for r in rs]
            if min(values) > 0:
                ax.set_yscale("log")
            else:  # the eigenvalue of largest magnitude can be negative away from a minimum
                ax.set_yscale("symlog", linthresh=1.0)
    fig.suptitle(title, fontsize="medium")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="outputs/small_scale_study", help="runs and reports")
    p.add_argument("--report", default="study", help="name of <out>/<report>.md/.json/.png")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--select-seed", type=int, default=100, help="the seed of the selection runs")
    p.add_argument("--rhos", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.4])
    p.add_argument("--alphas", type=float, nargs="+", default=[0.1, 0.2, 0.3], help="GSAM's alpha grid (App. B.1)")
    p.add_argument("--gsam-rho-alpha", type=float, default=0.2,
                   help="GSAM's alpha while its rho_max is searched (the middle of App. B.1's alpha grid)")
    p.add_argument("--gsam-rho-min", type=float, default=0.0,
                   help="GSAM's rho_min, the end of its rho_t (Table 4: 0.0 for the small ViTs and Mixers)")
    p.add_argument("--jobs", type=int, default=2, help="runs at once (1: in this process)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--override", nargs="*", default=[], help="trainer overrides for every run, e.g. train.device=cuda")
    return p.parse_args()


def main() -> None:
    args = parse()
    out, t0, load0 = Path(args.out), time.time(), os.getloadavg()
    out.mkdir(parents=True, exist_ok=True)
    sel = select(out, args)
    rep = report_runs(out, sel["chosen"], args)
    stats, diffs = summary(rep["runs"]), differences(rep["runs"])
    rho = float(_composed_analysis_rho(args.override))
    table = markdown(stats, rep["settings"], sel["chosen"], diffs, len(args.seeds), rho)
    info = {"seeds": args.seeds, "select_seed": args.select_seed,
            "grid": {"rhos": args.rhos, "alphas": args.alphas, "gsam_rho_alpha": args.gsam_rho_alpha,
                     "gsam_rho_min": args.gsam_rho_min},
            "override": args.override, "analysis_rho": rho, "summary": stats, "differences": diffs,
            "selection": sel["chosen"], "settings": rep["settings"], "runs": rep["runs"],
            "train_seconds": {"selection": sel["seconds"], "report": rep["seconds"]},
            "wall_seconds": time.time() - t0, "load_average_start": load0, "load_average_end": os.getloadavg(),
            "cpus": os.cpu_count(), "jobs": args.jobs, "threads": args.threads}
    (out / f"{args.report}.json").write_text(json.dumps(info, indent=1))
    (out / f"{args.report}.md").write_text(f"# Small-scale study: seeds {args.seeds}\n\n{table}\n## Selection\n\n"
                                          + selection_markdown(sel["chosen"], args.select_seed))
    plot(rep["runs"], stats, out / f"{args.report}.png",
         f"digits, 40% label noise, seeds {args.seeds}: mean ± std (bars), each seed (grey)")
    print(table + f"\nwrote {out}/{args.report}.md, .json, .png in {time.time() - t0:.0f} s")


def _composed_analysis_rho(extra) -> float:
    """The radius of h, as the runs composed it (analysis.rho of the study configs, or an override)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose(config_name="config", overrides=["+experiment=study_vanilla", *extra]).analysis.rho


if __name__ == "__main__":
    main()
