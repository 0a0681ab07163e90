"""The powered study (docs/analysis.md §6.4, issue 30 item 8): does GSAM's ascent step add at the same rho schedule
(the GSAM paper's Table 6), on a task and at a size where a one-point effect can be told from none?

The task: a teacher-student problem with clean labels (data/teacher.py, configs/data/powered.yaml): 2,560 training
images, 10,000 minival images to choose on, 30,000 val images to report on. The recipe: Table 1's ViT recipe in small
(configs/experiment/powered_*.yaml): a 2-block ViT, batch 256 in perturbation groups of m = 32, sigmoid loss with
head bias -10, AdamW with decoupled weight decay, 10% warm-up then linear decay, 600 steps. Every sharpness-aware
arm is GSAM (Algorithm 1) with three numbers: rho_max, rho_min (= rho_max: a constant rho) and alpha (0: no ascent
step, the update is SAM's). Every run is the real trainer (train.py's Hydra config).

  1. schedules, on minival at --select-seed, alpha 0, the same number of runs (--budget) for each:
     constant rho (SAM's): the grid --rho-grid; while the best is at an edge, one more point beyond it (x2 or /2),
       at most --extensions times; the rest of the budget bisects (geometric midpoints) around the best;
     decayed rho_t (rho_max to rho_min with the lr, Algorithm 1): rho_max on --rho-max-grid at rho_min = 0 with the
       same edge rule; then rho_min in {1/4, 1/2} x rho_max (3/4 if 1/2 is best and the budget allows); the rest
       bisects rho_max at the chosen rho_min;
  2. alpha, on minival at the same seed: --alphas at each chosen schedule; each "+ ascent" arm takes its schedule's
     best alpha > 0 (ties: the smaller value, everywhere);
  3. report, on val at every --seeds: vanilla, the four Table 6 arms, and the alpha curve at the decayed schedule
     (alpha 0 and every --alphas); paired differences by seed with 95% t-intervals.
Writes <out>/<report>.md, .json and .png. Finished runs are reused, so a stopped study resumes.

    PYTHONPATH=. python scripts/studies/powered_study.py --jobs 2 --threads 1  # the protocol (§6.4), ~1 h 35 min, 2 free cores
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gsam.studies.study_runs import (ci95, mean_std, overrides, paired_difference, read_run, tag,  # noqa: E402
                                     train_all)

GSAM, VANILLA = "powered_gsam", "powered_vanilla"
RHO_MIN_FRACTIONS = (0.25, 0.5)   # rho_min / rho_max tried at the chosen rho_max (0 is the grid's own)
RHO_MIN_EXTENSION = 0.75          # tried when 1/2 is best and the budget allows; 1 would be the constant schedule


# --- selection rules (pure: minival top-1 by value in, the next values out) ---

def best(results: dict[float, float]) -> float:
    """The value with the highest top-1; ties go to the smaller value."""
    return max(sorted(results), key=lambda v: results[v])


def extension(results: dict[float, float], factor: float = 2.0) -> float | None:
    """The next value beyond the edge where the best sits (x factor above the top, / factor below the bottom), or
    None when the best is inside the values tried."""
    v, values = best(results), sorted(results)
    if len(values) < 2:
        return None
    if v == values[-1]:
        return round(v * factor, 6)
    if v == values[0]:
        return round(v / factor, 6)
    return None


def bisections(results: dict[float, float], n: int) -> list[float]:
    """Up to n new values: the geometric midpoints between the best and its nearest tried neighbour below, then
    above (a rho grid is geometric)."""
    v, values = best(results), sorted(results)
    i = values.index(v)
    near = [values[i - 1]] if i > 0 else []
    near += [values[i + 1]] if i + 1 < len(values) else []
    mids = [round(math.sqrt(v * u), 6) for u in near if u > 0 and v > 0]
    return [m for m in mids if m not in results][:n]


def grid_stage(grid, budget: int, cap: int, run):
    """The edge rule on one parameter: the grid, then while the best is at an edge one value beyond it, at most
    ``cap`` times and never past ``budget`` runs. ``run(values) -> {value: top1}`` is a generator (see
    ``search_rounds``). Returns {value: top1}."""
    results = dict((yield from run(list(grid))))
    for _ in range(cap):
        nxt = extension(results)
        if nxt is None or len(results) >= budget:
            break
        results.update((yield from run([nxt])))
    return results


def bisect_stage(results: dict[float, float], budget_left: int, run):
    """Spend ``budget_left`` runs bisecting around the best, two at a time (below and above)."""
    while budget_left > 0:
        values = bisections(results, min(2, budget_left))
        if not values:
            break
        results.update((yield from run(values)))
        budget_left -= len(values)
    return results


# --- the searches: generators that yield settings to run and receive their minival top-1s ---

def ask(setting_of, values, tried: list):
    """Run the settings of ``values`` (one round); record (setting, top1) in ``tried``; return {value: top1}."""
    settings = [setting_of(v) for v in values]
    top1s = yield settings
    tried += [{"setting": s, "top1": t} for s, t in zip(settings, top1s)]
    return dict(zip(values, top1s))


def constant(rho: float) -> dict:
    """SAM's schedule: rho_t = rho at every step, no ascent (GSAM at rho_min = rho_max, alpha 0 is SAM's update)."""
    return {"sam.rho_max": rho, "sam.rho_min": rho, "sam.alpha": 0.0}


def decayed(rho_max: float, fraction: float) -> dict:
    """Algorithm 1's schedule: rho_t from rho_max down to rho_min = fraction x rho_max with the lr, no ascent."""
    return {"sam.rho_max": rho_max, "sam.rho_min": round(fraction * rho_max, 6), "sam.alpha": 0.0}


def chosen(tried: list) -> dict:
    """The best run of a search by minival top-1; ties go to the smaller rho_max, then rho_min, then alpha."""
    order = ("sam.rho_max", "sam.rho_min", "sam.alpha")
    top = max(tried, key=lambda t: (t["top1"], *(-t["setting"].get(k, 0.0) for k in order)))
    return {"setting": top["setting"], "minival_top1": top["top1"], "tried": tried}


def constant_search(grid, budget: int, cap: int):
    """SAM's rho: the grid with the edge rule, then bisection until ``budget`` runs."""
    tried: list = []
    run = lambda values: ask(constant, values, tried)  # noqa: E731
    results = yield from grid_stage(grid, budget, cap, run)
    yield from bisect_stage(results, budget - len(tried), run)
    return chosen(tried)


def decayed_search(grid, budget: int, cap: int):
    """GSAM's schedule: rho_max on the grid at rho_min = 0 with the edge rule (two runs kept for rho_min), rho_min in
    {1/4, 1/2} x rho_max (then 3/4 if 1/2 is best), then bisection of rho_max at the chosen rho_min until
    ``budget`` runs."""
    tried: list = []
    at = lambda f: (lambda values: ask(lambda r: decayed(r, f), values, tried))  # noqa: E731
    by_max = yield from grid_stage(grid, budget - len(RHO_MIN_FRACTIONS), cap, at(0.0))
    r = best(by_max)
    by_min = {0.0: by_max[r], **(yield from ask(lambda f: decayed(r, f), list(RHO_MIN_FRACTIONS), tried))}
    if best(by_min) == max(RHO_MIN_FRACTIONS) and len(tried) < budget:
        by_min.update((yield from ask(lambda f: decayed(r, f), [RHO_MIN_EXTENSION], tried)))
    f = best(by_min)
    yield from bisect_stage({**by_max, r: by_min[f]}, budget - len(tried), at(f))
    return chosen(tried)


def alpha_search(schedule: dict, alphas):
    """The ascent step at a chosen schedule: every alpha > 0 of the grid; the best is the "+ ascent" arm."""
    tried: list = []
    yield from ask(lambda a: {**schedule, "sam.alpha": a}, list(alphas), tried)
    return chosen(tried)


def search_rounds(searches: dict, evaluate) -> dict:
    """Drive the searches in lockstep: each round runs every search's next settings together
    (``evaluate([(name, setting), ...]) -> [top1, ...]``) so that the parallel jobs stay busy. Returns each search's
    result."""
    asks, done = {}, {}
    for name, g in searches.items():
        try:
            asks[name] = next(g)
        except StopIteration as stop:
            done[name] = stop.value
    while asks:
        jobs = [(name, s) for name, settings in asks.items() for s in settings]
        top1 = evaluate(jobs)
        new, k = {}, 0
        for name, settings in asks.items():
            part, k = top1[k:k + len(settings)], k + len(settings)
            try:
                new[name] = searches[name].send(part)
            except StopIteration as stop:
                done[name] = stop.value
        asks = new
    return done


# --- runs of the real trainer ---

def run_dir(out: Path, phase: str, experiment: str, setting: dict, seed: int) -> Path:
    return out / phase / f"{experiment.removeprefix('powered_')}_{tag(setting)}_seed{seed}"


def trainer(out: Path, args, fillers: list):
    """``evaluate`` for ``search_rounds``: each setting trained at --select-seed and scored on minival. A round
    with a job count the parallel jobs do not divide takes one of ``fillers`` (report runs that depend on no
    choice: vanilla's) into the idle slot."""
    def evaluate(jobs):
        dirs = [run_dir(out, "select", GSAM, s, args.select_seed) for _, s in jobs]
        batch = [(overrides(GSAM, s, args.select_seed, "minival", d, args.override), d)
                 for (_, s), d in zip(jobs, dirs)]
        while len(batch) % args.jobs and fillers:
            batch.append(fillers.pop(0))
        seconds.append(sum(train_all(_unique(batch), args.jobs, args.threads)))
        return [read_run(d)["top1"] for d in dirs]

    seconds: list = []
    evaluate.seconds = seconds
    return evaluate


def _unique(jobs):
    """Each run folder once: two jobs on one folder at the same time would train it twice into the same files."""
    seen, out = set(), []
    for args, d in jobs:
        if d not in seen:
            seen.add(d)
            out.append((args, d))
    return out


def arms(choice: dict, alphas) -> dict:
    """Every reported arm as (experiment, setting): vanilla, Table 6's four, and the alpha curve at the decayed
    schedule (its alpha-0 point is the "decayed" arm and its best alpha the "decayed_ascent" arm: the same runs)."""
    const, dec = choice["constant"]["setting"], choice["decayed"]["setting"]
    out = {"vanilla": (VANILLA, {}), "const": (GSAM, const),
           "const_ascent": (GSAM, choice["constant_alpha"]["setting"]), "decayed": (GSAM, dec),
           "decayed_ascent": (GSAM, choice["decayed_alpha"]["setting"])}
    out.update({f"decayed_alpha{a:g}": (GSAM, {**dec, "sam.alpha": a}) for a in (0.0, *alphas)})
    return out


def report_jobs(out: Path, plan: dict, seeds, args) -> dict:
    """{(arm, seed): (trainer arguments, run folder)} on val, seed after seed (a study stopped early has whole
    seeds)."""
    jobs = {}
    for s in seeds:
        for name, (experiment, setting) in plan.items():
            d = run_dir(out, "runs", experiment, setting, s)
            jobs[name, s] = (overrides(experiment, setting, s, "val", d, args.override), d)
    return jobs


def select(out: Path, args, fillers: list) -> dict:
    """Phase 1 and 2 on minival: both schedules with the same budget, then alpha at each chosen schedule."""
    evaluate = trainer(out, args, fillers)
    choice = search_rounds({"constant": constant_search(args.rho_grid, args.budget, args.extensions),
                            "decayed": decayed_search(args.rho_max_grid, args.budget, args.extensions)}, evaluate)
    choice.update({f"{k}_alpha": v for k, v in search_rounds(
        {k: alpha_search(choice[k]["setting"], args.alphas) for k in ("constant", "decayed")}, evaluate).items()})
    for k in ("constant", "decayed"):  # the alpha-0 run of each alpha search is its schedule's chosen run
        choice[f"{k}_alpha"]["alpha0_top1"] = choice[k]["minival_top1"]
    return {"choice": choice, "seconds": sum(evaluate.seconds)}


# --- statistics ---

PRIMARY = ("decayed_ascent", "decayed")  # the claim at GSAM's schedule: the protocol's one primary comparison
SECONDARY = (("const_ascent", "const"), ("decayed", "const"), ("decayed_ascent", "const"), ("const", "vanilla"))


def power(diffs: list[float]) -> dict:
    """The sample sd of paired differences and the effect a paired t-test at 5% (two-sided) would detect with 80%
    power at this many seeds: (t_0.975 + t_0.80) sd / sqrt(n), n - 1 degrees of freedom."""
    from scipy.stats import t

    n = len(diffs)
    sd = mean_std(diffs)[1]
    return {"sd": sd, "n": n, "detectable_80": float((t.ppf(0.975, n - 1) + t.ppf(0.8, n - 1)) * sd / math.sqrt(n))}


def verdict(d: dict) -> str:
    """What a paired 95% interval says about "a adds over b"."""
    lo, hi = d["mean"] - d["ci95"], d["mean"] + d["ci95"]
    if lo > 0:
        return "seen: the whole interval is above 0"
    if hi < 0:
        return "contradicted: the whole interval is below 0"
    return f"not resolved: the interval holds 0; it excludes effects above {hi:+.2f} and below {lo:+.2f}"


def differences(runs: dict, alphas) -> dict:
    """Paired by seed (the same seed is the same initialisation, data order and flips in every arm): the primary
    comparison, the secondary ones, and every alpha of the curve against alpha 0."""
    pairs = [PRIMARY, *SECONDARY, *((f"decayed_alpha{a:g}", "decayed_alpha0") for a in alphas)]
    out = {}
    for a, b in pairs:
        d = paired_difference(runs[a], runs[b])
        by_seed = {r["seed"]: r["top1"] for r in runs[b]}
        d.update(power([r["top1"] - by_seed[r["seed"]] for r in runs[a]]), verdict=verdict(d))
        out[f"{a} - {b}"] = d
    return out


def summary(runs: dict) -> dict:
    return {m: {"top1": mean_std([r["top1"] for r in rs]), "top1_ci95": ci95([r["top1"] for r in rs]),
                "train_loss": mean_std([r["train_loss"] for r in rs])} for m, rs in runs.items()}


# --- the report ---

def _setting(setting: dict) -> str:
    return ", ".join(f"{k.split('.')[-1]} {v:g}" for k, v in setting.items()) or "—"


def selection_markdown(choice: dict) -> str:
    rows = ["| search | setting | minival top-1 (%) | chosen |", "|---|---|---|---|"]
    for name, c in choice.items():
        for t in c["tried"]:
            rows.append(f"| {name} | {_setting(t['setting'])} | {t['top1']:.2f} | "
                        f"{'yes' if t['setting'] == c['setting'] else ''} |")
    return "\n".join(rows) + "\n"


def results_markdown(stats: dict, plan: dict, diffs: dict, n: int) -> str:
    rows = ["| arm | setting | test top-1 (%) | 95% interval | final train loss |", "|---|---|---|---|---|"]
    for m, s in stats.items():
        mean, ci = s["top1"][0], s["top1_ci95"]
        rows.append(f"| {m} | {_setting(plan[m][1])} | {mean:.2f} ± {s['top1'][1]:.2f} | [{mean - ci:.2f}, "
                    f"{mean + ci:.2f}] | {s['train_loss'][0]:.3f} ± {s['train_loss'][1]:.3f} |")
    rows += ["", "| difference of test top-1 (paired by seed) | mean | 95% interval | seeds won | sd | detectable "
             "(80% power) | verdict |", "|---|---|---|---|---|---|---|"]
    for k, d in diffs.items():
        mark = " (primary)" if k == " - ".join(PRIMARY) else ""
        rows.append(f"| {k}{mark} | {d['mean']:+.2f} | [{d['mean'] - d['ci95']:+.2f}, {d['mean'] + d['ci95']:+.2f}] | "
                    f"{d['wins']} of {d['n']} | {d['sd']:.2f} | {d['detectable_80']:.2f} | {d['verdict']} |")
    return "\n".join(rows) + (f"\n\nmean ± sample std over {n} seeds, 95% intervals of the mean (Student's t, "
                              f"{n - 1} degrees of freedom); test = the 30,000 val images, never used for a choice.\n")


def plot(runs: dict, diffs: dict, alphas, path: Path) -> None:
    """Left: the alpha curve at the decayed schedule (paired difference to alpha 0, 95% interval). Right: test top-1
    of each arm, every seed a dot, mean ± std a bar."""
    from gsam.studies.cli import pyplot

    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    ds = [diffs[f"decayed_alpha{a:g} - decayed_alpha0"] for a in alphas]
    left.errorbar(alphas, [d["mean"] for d in ds], yerr=[d["ci95"] for d in ds], fmt="o-", capsize=4)
    left.axhline(0, color="0.5", lw=0.8)
    left.set(xlabel="alpha (decayed rho_t)", ylabel="test top-1 minus alpha 0 (points)")
    names = ["vanilla", "const", "const_ascent", "decayed", "decayed_ascent"]
    for i, m in enumerate(names):
        right.scatter([i] * len(runs[m]), [r["top1"] for r in runs[m]], color="0.6", s=12, zorder=2)
        mean, sd = mean_std([r["top1"] for r in runs[m]])
        right.errorbar([i], [mean], yerr=[sd], fmt="o", capsize=5, color=f"C{i}", zorder=3)
    right.set(xticks=range(len(names)), xticklabels=names, ylabel="test top-1 (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="outputs/powered_study", help="runs and reports")
    p.add_argument("--report", default="study", help="name of <out>/<report>.md/.json/.png")
    p.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    p.add_argument("--select-seed", type=int, default=100, help="the seed of every minival run")
    p.add_argument("--rho-grid", type=float, nargs="+", default=[0.025, 0.05, 0.1, 0.2, 0.4], help="constant rho")
    p.add_argument("--rho-max-grid", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.4, 0.8],
                   help="decayed rho_t's rho_max (x2 the constant grid: a linear decay to 0 averages rho_max/2)")
    p.add_argument("--budget", type=int, default=10, help="minival runs per schedule, the same for both")
    p.add_argument("--extensions", type=int, default=2, help="at most this many points beyond a grid's edge")
    p.add_argument("--alphas", type=float, nargs="+", default=[0.1, 0.3, 0.6, 1.0],
                   help="alpha > 0 (0 is each schedule's own run)")
    p.add_argument("--jobs", type=int, default=2, help="runs at once (1: in this process)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--override", nargs="*", default=[], help="trainer overrides for every run, e.g. train.device=cuda")
    args = p.parse_args(argv)
    for name in ("rho_grid", "rho_max_grid"):
        if len(getattr(args, name)) < 2 or min(getattr(args, name)) <= 0:
            p.error(f"--{name.replace('_', '-')}: at least two positive values")
    if min(args.alphas) <= 0:
        p.error("--alphas: values > 0 (alpha 0 is each schedule's own run)")
    if args.budget < max(len(args.rho_grid), len(args.rho_max_grid) + len(RHO_MIN_FRACTIONS)):
        p.error(f"--budget {args.budget}: below a grid's size (+ {len(RHO_MIN_FRACTIONS)} rho_min runs for the "
                "decayed schedule)")
    return args


def write_data(extra) -> str:
    """The task's folder, written before any run (two runs starting at once would both write it)."""
    from hydra import compose, initialize_config_dir

    from gsam.data.teacher import write_task

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        d = compose(config_name="config", overrides=[f"+experiment={GSAM}", *extra]).data
    write_task(d.root, d.teacher, num_classes=int(d.num_classes), image_size=int(d.img_size))
    return str(d.root)


def main(argv=None) -> None:
    args = parse(argv)
    out, t0, load0 = Path(args.out), time.time(), os.getloadavg()
    out.mkdir(parents=True, exist_ok=True)
    data_root = write_data(args.override)
    fillers = list(report_jobs(out, {"vanilla": (VANILLA, {})}, args.seeds, args).values())
    sel = select(out, args, fillers)
    plan = arms(sel["choice"], args.alphas)
    jobs = report_jobs(out, plan, args.seeds, args)
    report_seconds = sum(train_all(_unique(list(jobs.values())), args.jobs, args.threads))
    runs = {m: [{"seed": s, "run": str(jobs[m, s][1]), **read_run(jobs[m, s][1])} for s in args.seeds] for m in plan}
    stats, diffs = summary(runs), differences(runs, args.alphas)
    table = results_markdown(stats, plan, diffs, len(args.seeds))
    info = {"args": vars(args), "data_root": data_root, "selection": sel["choice"],
            "arms": {m: {"experiment": e, "setting": s} for m, (e, s) in plan.items()}, "summary": stats,
            "differences": diffs, "runs": runs,
            "train_seconds": {"selection": sel["seconds"], "report": report_seconds},
            "wall_seconds": time.time() - t0, "load_average_start": load0, "load_average_end": os.getloadavg(),
            "cpus": os.cpu_count()}
    (out / f"{args.report}.json").write_text(json.dumps(info, indent=1))
    (out / f"{args.report}.md").write_text(f"# The powered study: seeds {args.seeds}\n\n{table}\n## Selection "
                                          f"(minival, seed {args.select_seed})\n\n" + selection_markdown(sel["choice"]))
    plot(runs, diffs, args.alphas, out / f"{args.report}.png")
    print(table + f"\nwrote {out}/{args.report}.md, .json, .png in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
