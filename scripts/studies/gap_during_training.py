"""Fig. 9 / Thm 5.3: the surrogate gap h during training for alpha in {0, 0.1, 0.2, 0.3}.

Three tasks:
  --task trainer    (default) the trainer's demo run, ``+experiment=demo_gsam`` (tiny ViT, AdamW, rho
                    0.05 -> 0.01 with the lr), once per alpha and seed; h is the per-step minibatch gap
                    the trainer logs, as in the paper's Fig. 9. Extra trainer overrides: --override.
  --task demo       the demo digits with the small MLP at constant rho (minibatch SGD, h on 512 fixed
                    images in eval mode, per epoch)
  --task synthetic  a tanh network regressing a linear teacher, full batch and noise-free (every 10 steps)
With --runs DIR..., existing trainer runs (any experiment, e.g. ImageNet runs of a Slurm sweep over
sam.alpha) are summarised instead; their config.yaml gives alpha and seed.
The JSON says, for every seed, whether h (trainer: its mean over the run, and over the last epoch;
otherwise: the final h) is strictly decreasing in alpha.

    PYTHONPATH=. python scripts/studies/gap_during_training.py --seeds 0 1 2
    PYTHONPATH=. python scripts/studies/gap_during_training.py --runs outputs/sweep/*     # existing runs
    PYTHONPATH=. python scripts/studies/gap_during_training.py --task demo --seeds 0 1 2
    PYTHONPATH=. python scripts/studies/gap_during_training.py --task synthetic --seeds 0 1 2 3 4 5
"""
import time

import torch.nn.functional as F

from gsam.analysis import surrogate_gap
from gsam.studies.cli import keeps_threads, parser, pyplot, save_json, save_png, start
from gsam.studies.demo_task import TrainSpec, demo_mlp, load_demo_data, train_demo
from gsam.studies.stats import epoch_means, strictly_decreasing, window_mean
from gsam.studies.synthetic import teacher_task, train_full_batch
from gsam.studies.trainer_runs import find_alpha_runs, logged, train_alpha_runs

NAME = "gap_during_training"


def demo_curve(data, alpha, rho, seed, epochs):
    batches = data.batches("train", 512, 512)
    model = demo_mlp(seed=seed)
    spec = TrainSpec(method={"name": "gsam", "rho_max": rho, "alpha": alpha}, epochs=epochs, seed=seed)
    hist = train_demo(model, data, spec, on_epoch=lambda e, m: {
        "h": surrogate_gap(m, F.cross_entropy, batches, rho).surrogate_gap})
    return [r["epoch"] for r in hist], [r["h"] for r in hist]


def synthetic_curve(alpha, rho, seed, steps, every=10):
    model, batches, criterion = teacher_task(seed)
    xs, hs = [], []

    def on_step(step, m):
        if step % every == 0:
            xs.append(step)
            hs.append(surrogate_gap(m, criterion, batches, rho).surrogate_gap)

    train_full_batch(model, batches, criterion, {"name": "gsam", "rho_max": rho, "alpha": alpha}, steps=steps,
                     on_step=on_step)
    return xs, hs


def trainer_curves(args, out):
    """Train demo_gsam once per (seed, alpha); the logged minibatch h, per epoch and summarised."""
    if args.runs:
        runs = find_alpha_runs(args.runs)
        args.seeds, args.alphas = sorted({s for s, _ in runs}), sorted({a for _, a in runs})
        missing = [f"seed {s} alpha {a}" for s in args.seeds for a in args.alphas if (s, a) not in runs]
        if missing:
            raise SystemExit(f"--runs: every seed needs every alpha; missing {', '.join(missing)}")
    else:
        runs = train_alpha_runs(args.experiment, out / "runs", args.alphas, args.seeds,
                                [f"data.root={args.demo_root}", "logger.wandb.mode=disabled", "train.progress=false",
                                 *args.override])
    curves = {}
    for (seed, alpha), d in runs.items():
        _, h, epochs = logged(d)
        xs, hs = epoch_means(h, epochs)
        curves[f"seed{seed}_alpha{alpha}"] = {
            "seed": seed, "alpha": alpha, "x": xs, "h": hs, "run": str(d), "steps": len(h),
            "mean_h": window_mean(h), "last_third_h": window_mean(h, 2 / 3), "last_epoch_h": hs[-1]}
    return curves


@keeps_threads
def main():
    p = parser(__doc__, NAME)
    p.add_argument("--task", choices=("trainer", "demo", "synthetic"), default="trainer")
    p.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3])
    p.add_argument("--rho", type=float, default=None, help="demo/synthetic: constant rho (default 0.1)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--epochs", type=int, default=20, help="demo: epochs")
    p.add_argument("--steps", type=int, default=400, help="synthetic: full-batch steps")
    p.add_argument("--experiment", default="demo_gsam", help="trainer: the experiment to vary alpha in")
    p.add_argument("--override", nargs="*", default=[], help="trainer: extra config overrides, e.g. schedule.epochs=10")
    p.add_argument("--runs", nargs="+", default=None,
                   help="trainer: summarise these existing run folders (e.g. a sweep over sam.alpha) instead of training")
    args = p.parse_args()
    out, t0 = start(args), time.time()
    out = out / args.task
    out.mkdir(exist_ok=True)
    rho = args.rho if args.rho is not None else 0.1
    if args.task == "trainer":
        curves = trainer_curves(args, out)
        stats = ("mean_h", "last_third_h", "last_epoch_h")
    else:
        data = load_demo_data(args.demo_root) if args.task == "demo" else None
        curves = {}
        for seed in args.seeds:
            for alpha in args.alphas:
                xs, hs = (demo_curve(data, alpha, rho, seed, args.epochs) if args.task == "demo"
                          else synthetic_curve(alpha, rho, seed, args.steps))
                curves[f"seed{seed}_alpha{alpha}"] = {"seed": seed, "alpha": alpha, "x": xs, "h": hs,
                                                      "final_h": hs[-1]}
        stats = ("final_h",)
    verdicts = {}
    for seed in args.seeds:
        v = verdicts[seed] = {}
        for stat in stats:
            vals = [curves[f"seed{seed}_alpha{a}"][stat] for a in args.alphas]
            v[stat] = {"values": vals, "decreasing_in_alpha": strictly_decreasing(vals),
                       "largest_alpha_below_zero_alpha": vals[-1] < vals[0]}
            print(f"seed {seed}: {stat} " + ", ".join(f"alpha {a}: {h:.5f}" for a, h in zip(args.alphas, vals)) +
                  f"  -> decreasing in alpha: {v[stat]['decreasing_in_alpha']}", flush=True)
    held = {stat: sum(verdicts[s][stat]["decreasing_in_alpha"] for s in args.seeds) for stat in stats}
    plt = pyplot()
    fig, axes = plt.subplots(1, 2 if args.task == "trainer" else 1, figsize=(10, 3.8) if args.task == "trainer" else (5.5, 3.8))
    ax = axes[0] if args.task == "trainer" else axes
    first = args.seeds[0]
    for alpha in args.alphas:
        c = curves[f"seed{first}_alpha{alpha}"]
        ax.plot(c["x"], c["h"], label=f"α = {alpha}")
    main_stat = stats[0]
    ylabel = "h (per-epoch mean of the logged gap)" if args.task == "trainer" else f"surrogate gap h (ρ = {rho})"
    ax.set(xlabel="step" if args.task == "synthetic" else "epoch", ylabel=ylabel,
           title=f"{args.task} task, seed {first}")
    ax.legend()
    if args.task == "trainer":  # the statistic the verdict uses, every seed
        for seed in args.seeds:
            axes[1].plot(args.alphas, verdicts[seed][main_stat]["values"], marker="o", label=f"seed {seed}")
        axes[1].set(xlabel="α", ylabel="h, mean over the run", xticks=args.alphas,
                    title=f"strictly decreasing in α for {held[main_stat]}/{len(args.seeds)} seeds")
        axes[1].legend(fontsize="small")
    save_png(fig, out, NAME)
    save_json(out, NAME, {"task": args.task, "rho": None if args.task == "trainer" else rho, "alphas": args.alphas,
                          "seeds": args.seeds, "ordering_held": held, "verdicts": verdicts, "curves": curves}, t0)
    print("strictly decreasing in alpha: " + ", ".join(f"{k} {n}/{len(args.seeds)} seeds" for k, n in held.items()) +
          f"; wrote {out}/{NAME}.png and .json in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
