"""The cost-accuracy frontier of the efficient variants on the small-scale study's task (docs/analysis.md §6.3).

Reads a finished small-scale study (scripts/small_scale_study.py: <study>/<report>.json, each method's setting chosen
on minival and its runs at every seed) and trains the efficient variants with the same trainer, data, seeds and
split. Each variant starts from its parent's choice, so a variant is compared with the method it approximates:
  every_k   at each k of --ks: SAM's chosen rho, the SAM step every k steps and AdamW's step between (Composer);
  looksam   at each k of --ks: SAM's chosen rho; its reuse strength alpha chosen on minival over --look-alphas at
            the largest k (Liu et al. 2022, Algorithm 1);
  lookgsam  at the largest k (ours): GSAM's chosen rho_max, rho_min and alpha, LookSAM's chosen reuse alpha;
  mesa      lam and tau of the official ImageNet command, the KL term from its epoch 6, the EMA decay chosen on
            minival over --mesa-decays (the official 0.9998 averages over 5,000 steps, longer than this whole run).
Selection runs use the study's --select-seed on minival; every point then runs at every seed of the study on val.

Cost: each point's step time over vanilla's, measured by scripts/bench_train.py on the study's model, batch and image
size in one interleaved run (the trainer's own step, synthetic data; XSAM's search amortised over one epoch, as the
study's XSAM searches every epoch). Accuracy: test top-1 over seeds (mean, std, 95% interval), the paired difference
to vanilla and the share of GSAM's gain over vanilla it keeps. The goal checked: a point at <= --goal-cost x
vanilla's cost keeping >= --goal-share of GSAM's gain. Writes <out>/frontier.md, .json and .png.

    PYTHONPATH=. python scripts/frontier_study.py --study outputs/small_scale_study --jobs 2
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gsam.studies.cli import pyplot, save_png  # noqa: E402
from gsam.studies.study_runs import (ci95, choose, mean_std, overrides, paired_difference, read_run, tag,  # noqa: E402
                                     train_all)

PARENTS = ("vanilla", "sam", "gsam", "xsam")  # the study's methods, drawn on the frontier from its own runs
BENCH_LABELS = {"vanilla": "vanilla", "sam": "SAM", "gsam": "GSAM", "xsam": "XSAM"}  # bench_train's names


def sam_rho(study: dict) -> float:
    return study["settings"]["sam"]["sam.rho_max"]


def gsam_keys(study: dict) -> dict:
    """GSAM's chosen setting under LookGSAM's names: its alpha is gsam_alpha there (alpha is the reuse strength)."""
    g = study["settings"]["gsam"]
    return {"sam.rho_max": g["sam.rho_max"], "sam.rho_min": g["sam.rho_min"], "sam.gsam_alpha": g["sam.alpha"]}


def selection_grid(study: dict, args) -> dict[str, list[dict]]:
    """The settings chosen on minival before the report: LookSAM's reuse alpha, MESA's EMA decay."""
    k = max(args.ks)
    return {"looksam": [{"sam.rho_max": sam_rho(study), "sam.k": k, "sam.alpha": a} for a in args.look_alphas],
            "mesa": [{"sam.lam": args.mesa_lam, "sam.tau": args.mesa_tau, "sam.decay": d,
                      "sam.start_step": args.mesa_start_epoch * args.steps_per_epoch} for d in args.mesa_decays]}


def points(study: dict, chosen: dict, args) -> dict[str, tuple[str, dict]]:
    """Every frontier point: label -> (sam group, setting)."""
    rho, k_max = sam_rho(study), max(args.ks)
    look_alpha = chosen["looksam"]["setting"]["sam.alpha"]
    out = {f"every_k-{k}": ("every_k", {"sam.rho_max": rho, "sam.k": k}) for k in args.ks}
    out |= {f"looksam-{k}": ("looksam", {"sam.rho_max": rho, "sam.k": k, "sam.alpha": look_alpha}) for k in args.ks}
    out[f"lookgsam-{k_max}"] = ("lookgsam", {**gsam_keys(study), "sam.k": k_max, "sam.alpha": look_alpha})
    out["mesa"] = ("mesa", chosen["mesa"]["setting"])
    return out


def _job(group: str, setting: dict, seed: int, split: str, folder: Path, args) -> tuple[list[str], Path]:
    extra = [f"sam={group}", f"name=study_{group}", *args.override]
    return overrides("study_sam", setting, seed, split, folder, extra), folder


def select(out: Path, study: dict, args) -> dict:
    """Each selection grid at the study's selection seed on minival; the best setting of each."""
    grids = selection_grid(study, args)
    where = {g: [(s, out / "select" / f"{g}_{tag(s)}") for s in grid] for g, grid in grids.items()}
    train_all([_job(g, s, study["select_seed"], "minival", d, args) for g in where for s, d in where[g]], args.jobs,
              args.threads)
    return {g: choose([{"setting": s, "run": str(d), **read_run(d)} for s, d in where[g]]) for g in where}


def report_runs(out: Path, pts: dict, seeds: list[int], args) -> dict:
    """Every point at every seed on val, seed after seed (a stopped study has the same seeds for every point)."""
    dirs = {(p, s): out / "runs" / f"{p}_{tag(pts[p][1])}_seed{s}" for s in seeds for p in pts}
    train_all([_job(pts[p][0], pts[p][1], s, "val", d, args) for (p, s), d in dirs.items()], args.jobs, args.threads)
    return {p: [{"seed": s, "run": str(dirs[p, s]), **read_run(dirs[p, s])} for s in seeds] for p in pts}


def bench_spec(group: str, setting: dict) -> dict:
    """A point's sam config for bench_train (its step: the radius and strengths do not change the cost)."""
    spec = {"name": group, **{k.split(".", 1)[1]: v for k, v in setting.items()}}
    return spec | ({"start_step": 0} if group == "mesa" else {})  # MESA's KL term on from the first timed step


def measure_cost(pts: dict, args) -> dict:
    """Step time over vanilla's of the study's methods and of every point, one interleaved bench_train run."""
    extra = [f"--extra={p}={json.dumps(bench_spec(*pts[p]))}" for p in pts]
    path = Path(args.out) / "cost.json"
    cmd = [sys.executable, str(ROOT / "scripts" / "bench_train.py"), "--models", "study_vit", "--device", "cpu",
           "--amp", "none", "--img-size", str(args.img_size), "--batch", str(args.batch), "--classes", "10",
           "--steps", str(args.cost_steps), "--rounds", str(args.cost_rounds),
           "--search-every", str(args.steps_per_epoch), "--json", str(path), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT)}
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    figures = json.loads(path.read_text())["study_vit"]
    cost = {"vanilla": 1.0, "sam": figures["SAM/vanilla"],
            "gsam": figures["SAM/vanilla"] * figures["GSAM/SAM"], "xsam": figures["SAM/vanilla"] * figures["XSAM/SAM"]}
    return cost | {p: figures[f"{p}/vanilla"] for p in pts}


def summarise(runs: dict, cost: dict, args) -> dict:
    """Per point: cost, top-1 mean/std/95% interval, paired difference to vanilla, share of GSAM's gain."""
    vanilla, gain = runs["vanilla"], mean_std([r["top1"] for r in runs["gsam"]])[0] - mean_std(
        [r["top1"] for r in runs["vanilla"]])[0]
    rows = {}
    for p, rs in runs.items():
        mean, std = mean_std([r["top1"] for r in rs])
        diff = paired_difference(rs, vanilla) if p != "vanilla" else None
        share = diff["mean"] / gain if diff and gain > 0 else float("nan")
        rows[p] = {"cost": cost[p], "top1": mean, "std": std, "ci95": ci95([r["top1"] for r in rs]), "n": len(rs),
                   "minus_vanilla": diff, "share_of_gsam_gain": share,
                   "goal": p not in PARENTS and cost[p] <= args.goal_cost and share >= args.goal_share}
    return {"gsam_gain": gain, "points": rows}


def markdown(summary: dict, settings: dict, chosen: dict, args) -> str:
    rows = ["| point | setting | cost (x vanilla) | test top-1 (%) | 95% interval | minus vanilla (paired) | "
            "share of GSAM's gain | goal |", "|---|---|---|---|---|---|---|---|"]
    for p, r in sorted(summary["points"].items(), key=lambda kv: kv[1]["cost"]):
        d = r["minus_vanilla"]
        diff = f"{d['mean']:+.2f} [{d['mean'] - d['ci95']:+.2f}, {d['mean'] + d['ci95']:+.2f}]" if d else "—"
        share = "—" if p in PARENTS else f"{100 * r['share_of_gsam_gain']:.0f}%"
        setting = ", ".join(f"{k.split('.')[-1]} {v:g}" for k, v in settings.get(p, {}).items()) or "the study's"
        rows.append(f"| {p} | {setting} | {r['cost']:.2f} | {r['top1']:.2f} ± {r['std']:.2f} | "
                    f"[{r['top1'] - r['ci95']:.2f}, {r['top1'] + r['ci95']:.2f}] | {diff} | {share} | "
                    f"{'yes' if r['goal'] else ''} |")
    picked = [f"{g}: {', '.join(f'{k} {v:g}' for k, v in c['setting'].items())} (minival {c['minival_top1']:.2f} of "
              + ", ".join(f"{t['top1']:.2f}" for t in c["tried"]) + ")" for g, c in chosen.items()]
    reached = [p for p, r in summary["points"].items() if r["goal"]]
    return ("\n".join(rows) + f"\n\nGSAM's gain over vanilla: {summary['gsam_gain']:+.2f} points. Goal (<= "
            f"{args.goal_cost:g}x vanilla's cost, >= {100 * args.goal_share:.0f}% of GSAM's gain): "
            + (f"reached by {', '.join(reached)}" if reached else "not reached") + ".\n\nChosen on minival: "
            + "; ".join(picked) + ".\n")


def plot(summary: dict, path: Path) -> None:
    """Test top-1 (mean ± 95% interval) against the measured cost per step relative to vanilla."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for p, r in summary["points"].items():
        parent = p in PARENTS
        ax.errorbar(r["cost"], r["top1"], yerr=r["ci95"], fmt="s" if parent else "o", capsize=4,
                    color="black" if parent else None)
        ax.annotate(p, (r["cost"], r["top1"]), textcoords="offset points", xytext=(5, 4), fontsize="small")
    ax.set(xlabel="cost per step (x vanilla's, bench_train on the study's model)", ylabel="test top-1 (%)",
           title="digits, 40% label noise: mean ± 95% interval over seeds")
    save_png(fig, path.parent, path.stem, dpi=120)
    plt.close(fig)


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", default="outputs/small_scale_study", help="the small-scale study's --out")
    p.add_argument("--study-report", default="study", help="its --report")
    p.add_argument("--out", default=None, help="runs and reports (default: <study>/frontier)")
    p.add_argument("--ks", type=int, nargs="+", default=[2, 5], help="the periods of every_k and LookSAM")
    p.add_argument("--look-alphas", type=float, nargs="+", default=[0.1, 0.7],
                   help="LookSAM's reuse strength, chosen on minival (0.7: the common re-implementation's default)")
    p.add_argument("--mesa-lam", type=float, default=0.8, help="the official ImageNet command's --reinforce")
    p.add_argument("--mesa-tau", type=float, default=5.0, help="the official temperature")
    p.add_argument("--mesa-decays", type=float, nargs="+", default=[0.99, 0.999], help="EMA decays, chosen on minival")
    p.add_argument("--mesa-start-epoch", type=int, default=6, help="the KL term from this epoch (the official's)")
    p.add_argument("--steps-per-epoch", type=int, default=18, help="the study's: 1,157 train images at batch 64")
    p.add_argument("--img-size", type=int, default=16)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--cost-steps", type=int, default=20)
    p.add_argument("--cost-rounds", type=int, default=5)
    p.add_argument("--goal-cost", type=float, default=1.3)
    p.add_argument("--goal-share", type=float, default=0.8)
    p.add_argument("--jobs", type=int, default=2, help="runs at once (1: in this process)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run and for the cost measurement")
    p.add_argument("--override", nargs="*", default=[], help="trainer overrides for every run")
    return p.parse_args()


def main() -> None:
    args = parse()
    t0, load0 = time.time(), os.getloadavg()
    study = json.loads((Path(args.study) / f"{args.study_report}.json").read_text())
    args.out = args.out or str(Path(args.study) / "frontier")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    chosen = select(out, study, args)
    pts = points(study, chosen, args)
    runs = {m: study["runs"][m] for m in PARENTS} | report_runs(out, pts, study["seeds"], args)
    cost = measure_cost(pts, args)
    summary = summarise(runs, cost, args)
    settings = {p: s for p, (_, s) in pts.items()} | {m: study["settings"][m] for m in PARENTS}
    table = markdown(summary, settings, chosen, args)
    info = {"study": str(Path(args.study) / f"{args.study_report}.json"), "seeds": study["seeds"], "cost": cost,
            "summary": summary, "selection": chosen, "settings": settings, "runs": runs,
            "wall_seconds": time.time() - t0, "load_average_start": load0, "load_average_end": os.getloadavg(),
            "cpus": os.cpu_count(), "jobs": args.jobs, "threads": args.threads}
    (out / "frontier.json").write_text(json.dumps(info, indent=1))
    (out / "frontier.md").write_text(f"# Cost-accuracy frontier: seeds {study['seeds']}\n\n{table}")
    plot(summary, out / "frontier.png")
    print(table + f"\nwrote {out}/frontier.md, .json, .png in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
