"""The cost-accuracy frontier of the efficient variants on the small-scale study's task (docs/analysis.md §6.3).

Reads a finished small-scale study (scripts/studies/small_scale_study.py: <study>/<report>.json, each method's setting chosen
on minival and its runs at every seed) and trains the efficient variants with the same trainer, data, seeds and
split. Each variant starts from its parent's choice, so a variant is compared with the method it approximates:
  every_k   at each k of --ks: SAM's chosen rho, the SAM step every k steps and AdamW's step between (Composer);
  looksam   at each k of --ks: SAM's chosen rho; its reuse strength alpha chosen on minival over --look-alphas at
            the largest k (Liu et al. 2022, Algorithm 1);
  lookgsam  at the largest k (ours): GSAM's chosen rho_max, rho_min and alpha, LookSAM's chosen reuse alpha;
  mesa      lam and tau of the official ImageNet command, the KL term from its epoch 6, the EMA decay chosen on
            minival over --mesa-decays (the official 0.9998 averages over 5,000 steps, longer than this whole run).
Selection runs use the study's --select-seed on minival; every point then runs at every seed of the study on val.

Cost: each point's step time over vanilla's, measured by scripts/bench/bench_train.py on the study's model, batch and image
size in one interleaved run (the trainer's own step, synthetic data; XSAM's search amortised over one epoch, as the
study's XSAM searches every epoch). Accuracy: test top-1 over seeds (mean, std, 95% interval), the paired difference
to vanilla, and the share of its PARENT's gain over vanilla it keeps (every_k, LookSAM and MESA approximate SAM;
LookGSAM approximates GSAM), paired by seed, with a 95% bootstrap interval over seeds. The goal checked: a point at
<= --goal-cost x vanilla's cost keeping >= --goal-share of its parent's gain, judged on the interval (reached: all of
it at or above the goal; not reached: all of it below; else undecided). Writes <out>/frontier.md, .json and .png.

    PYTHONPATH=. python scripts/studies/frontier_study.py --study outputs/small_scale_study --jobs 2
    PYTHONPATH=. python scripts/studies/frontier_study.py --from-json outputs/small_scale_study/frontier/frontier.json
        # the report again from a finished frontier's runs and cost, without training (e.g. after a change here)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gsam.studies.cli import pyplot, save_png  # noqa: E402
from gsam.studies.study_runs import (ci95, choose, mean_std, overrides, paired_difference, paired_share,  # noqa: E402
                                     read_run, tag, train_all)

PARENTS = ("vanilla", "sam", "gsam", "xsam")  # the study's methods, drawn on the frontier from its own runs
BENCH_LABELS = {"vanilla": "vanilla", "sam": "SAM", "gsam": "GSAM", "xsam": "XSAM"}  # bench_train's names
# the method each variant approximates, whose gain over vanilla it is measured against
PARENT_OF = {"every_k": "sam", "looksam": "sam", "mesa": "sam", "lookgsam": "gsam"}


def parent_of(point: str) -> str:
    """A point's parent, by its variant (the label before the dash: looksam-5 -> looksam -> sam)."""
    return PARENT_OF[point.split("-")[0]]


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
    cmd = [sys.executable, str(ROOT / "scripts" / "bench" / "bench_train.py"), "--models", "study_vit",
           "--device", "cpu", "--amp", "none", "--img-size", str(args.img_size), "--batch", str(args.batch),
           "--classes", "10", "--steps", str(args.cost_steps), "--rounds", str(args.cost_rounds),
           "--search-every", str(args.steps_per_epoch), "--json", str(path), *extra]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT)}
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    figures = json.loads(path.read_text())["study_vit"]
    cost = {"vanilla": 1.0, "sam": figures["SAM/vanilla"],
            "gsam": figures["SAM/vanilla"] * figures["GSAM/SAM"], "xsam": figures["SAM/vanilla"] * figures["XSAM/SAM"]}
    return cost | {p: figures[f"{p}/vanilla"] for p in pts}


def goal_verdict(cost: float, share: dict, args) -> str:
    """reached: at most --goal-cost and the whole share interval at or above --goal-share; not reached: over the
    cost, or the whole interval below; undecided: the interval holds the goal."""
    lo, hi = share["ci95"]
    if cost > args.goal_cost or hi < args.goal_share:
        return "not reached"
    return "reached" if lo >= args.goal_share else "undecided"


def summarise(runs: dict, cost: dict, args) -> dict:
    """Per point: cost, top-1 mean/std/95% interval, paired difference to vanilla, and (variants) the share of its
    parent's gain over vanilla, paired by seed with a bootstrap interval, and the goal's verdict."""
    vanilla, rows = runs["vanilla"], {}
    for p, rs in runs.items():
        mean, std = mean_std([r["top1"] for r in rs])
        diff = paired_difference(rs, vanilla) if p != "vanilla" else None
        share = None
        if p not in PARENTS:
            share = {"parent": parent_of(p), **paired_share(rs, runs[parent_of(p)], vanilla, args.boot, args.boot_seed)}
        rows[p] = {"cost": cost[p], "top1": mean, "std": std, "ci95": ci95([r["top1"] for r in rs]), "n": len(rs),
                   "minus_vanilla": diff, "share_of_parent_gain": share,
                   "goal": goal_verdict(cost[p], share, args) if share else None}
    return {"parent_gains": {m: rows[m]["minus_vanilla"] for m in sorted(set(PARENT_OF.values()))}, "points": rows}


def _interval(mean: float, half: float) -> str:
    return f"{mean:+.2f} [{mean - half:+.2f}, {mean + half:+.2f}]"


def _share(s: dict | None) -> str:
    if s is None:
        return "—"
    lo, hi = (f"{100 * x:.0f}%" if abs(x) != float("inf") else ("−∞" if x < 0 else "+∞") for x in s["ci95"])
    return f"{100 * s['share']:.0f}% [{lo}, {hi}] of {s['parent'].upper()}'s"


def markdown(summary: dict, settings: dict, chosen: dict, args) -> str:
    rows = ["| point | setting | cost (x vanilla) | test top-1 (%) | 95% interval | minus vanilla (paired) | "
            "share of the parent's gain [95% bootstrap] | goal |", "|---|---|---|---|---|---|---|---|"]
    for p, r in sorted(summary["points"].items(), key=lambda kv: kv[1]["cost"]):
        d = r["minus_vanilla"]
        setting = ", ".join(f"{k.split('.')[-1]} {v:g}" for k, v in settings.get(p, {}).items()) or "the study's"
        rows.append(f"| {p} | {setting} | {r['cost']:.2f} | {r['top1']:.2f} ± {r['std']:.2f} | "
                    f"[{r['top1'] - r['ci95']:.2f}, {r['top1'] + r['ci95']:.2f}] | "
                    f"{_interval(d['mean'], d['ci95']) if d else '—'} | {_share(r['share_of_parent_gain'])} | "
                    f"{r['goal'] or ''} |")
    picked = [f"{g}: {', '.join(f'{k} {v:g}' for k, v in c['setting'].items())} (minival {c['minival_top1']:.2f} of "
              + ", ".join(f"{t['top1']:.2f}" for t in c["tried"]) + ")" for g, c in chosen.items()]
    gains = "; ".join(f"{m.upper()} {_interval(g['mean'], g['ci95'])}"
                      for m, g in sorted(summary["parent_gains"].items()))
    verdicts = {v: [p for p, r in summary["points"].items() if r["goal"] == v] for v in ("reached", "undecided")}
    return ("\n".join(rows) + f"\n\nThe parents' gains over vanilla (paired by seed, 95% t-interval): {gains}. Goal "
            f"(<= {args.goal_cost:g}x vanilla's cost, >= {100 * args.goal_share:.0f}% of the parent's gain, judged on "
            f"the bootstrap interval over {args.boot} resamples of the seeds): reached by "
            f"{', '.join(verdicts['reached']) or 'none'}; undecided for {', '.join(verdicts['undecided']) or 'none'}."
            + ("\n\nChosen on minival: " + "; ".join(picked) + "." if picked else "") + "\n")


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
    p.add_argument("--goal-share", type=float, default=0.8, help="of the parent's gain over vanilla")
    p.add_argument("--boot", type=int, default=10_000, help="bootstrap resamples of the seeds for the share's interval")
    p.add_argument("--boot-seed", type=int, default=0)
    p.add_argument("--from-json", default=None, help="a finished frontier.json: its report again, nothing trained")
    p.add_argument("--jobs", type=int, default=2, help="runs at once (1: in this process)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run and for the cost measurement")
    p.add_argument("--override", nargs="*", default=[], help="trainer overrides for every run")
    return p.parse_args()


def write_report(out: Path, info: dict, args) -> str:
    """frontier.json (``info`` with the summary), .md and .png from the runs, cost, settings and selection."""
    summary = summarise(info["runs"], info["cost"], args)
    table = markdown(summary, info["settings"], info["selection"], args)
    info = {**info, "summary": summary, "boot": args.boot, "boot_seed": args.boot_seed}
    (out / "frontier.json").write_text(json.dumps(info, indent=1))
    (out / "frontier.md").write_text(f"# Cost-accuracy frontier: seeds {info['seeds']}\n\n{table}")
    plot(summary, out / "frontier.png")
    return table


def main() -> None:
    args = parse()
    t0, load0 = time.time(), os.getloadavg()
    if args.from_json:  # the report again from a finished frontier: its runs and cost, nothing trained
        info = json.loads(Path(args.from_json).read_text())
        out = Path(args.out or Path(args.from_json).parent)
        out.mkdir(parents=True, exist_ok=True)
        print(write_report(out, info, args) + f"\nwrote {out}/frontier.md, .json, .png")
        return
    study = json.loads((Path(args.study) / f"{args.study_report}.json").read_text())
    args.out = args.out or str(Path(args.study) / "frontier")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    chosen = select(out, study, args)
    pts = points(study, chosen, args)
    runs = {m: study["runs"][m] for m in PARENTS} | report_runs(out, pts, study["seeds"], args)
    cost = measure_cost(pts, args)
    settings = {p: s for p, (_, s) in pts.items()} | {m: study["settings"][m] for m in PARENTS}
    info = {"study": str(Path(args.study) / f"{args.study_report}.json"), "seeds": study["seeds"], "cost": cost,
            "selection": chosen, "settings": settings, "runs": runs, "wall_seconds": time.time() - t0,
            "load_average_start": load0, "load_average_end": os.getloadavg(), "cpus": os.cpu_count(),
            "jobs": args.jobs, "threads": args.threads}
    table = write_report(out, info, args)
    print(table + f"\nwrote {out}/frontier.md, .json, .png in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
