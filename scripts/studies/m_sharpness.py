"""m-sharpness (Foret et al. 2021, Sec. 4.1) on the demo task: validation accuracy and surrogate gap
against m, the number of images per perturbation group (``opt.step([closure_1, ..., closure_G])``),
for SAM and GSAM, several seeds, at the same batch, lr schedule and rho.

The gap is measured two ways: as the optimizer sees it during training (the mean over the last
epoch's steps of each group's own h, which depends on m by construction), and at the final weights
with one yardstick for every m (``surrogate_gap``: h = f(w + rho g/||g||) - f(w) with g the gradient
of the whole training set, eval mode).

    PYTHONPATH=. python scripts/studies/m_sharpness.py --seeds 0 1 2 --m 8 32 128
"""
import time

import numpy as np
import torch.nn.functional as F

from gsam.analysis import surrogate_gap
from gsam.studies.cli import keeps_threads, parser, pyplot, save_json, save_png, start
from gsam.studies.demo_task import TrainSpec, accuracy, demo_mlp, load_demo_data, train_demo

NAME = "m_sharpness"


def one_run(data, method: dict, m: int, seed: int, args) -> dict:
    model = demo_mlp(seed=seed)
    spec = TrainSpec(method=method, epochs=args.epochs, batch_size=args.batch, seed=seed, lr=args.lr,
                     lr_min=args.lr / 100, m=m)
    history = train_demo(model, data, spec)
    gap = surrogate_gap(model, F.cross_entropy, data.batches("train", 512), args.rho)
    return {"val_top1": accuracy(model, data.val_x, data.val_y), "step_gap": history[-1]["step_surrogate_gap"],
            "final_gap": gap.surrogate_gap}


def plot(results: dict, args, out) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    keys = [("val_top1", "val top-1 (%)"), ("step_gap", "h during training (own groups)"),
            ("final_gap", f"h at the end (whole set, ρ = {args.rho})")]
    for label, by_m in results.items():
        ms = sorted(int(m) for m in by_m)
        for ax, (key, title) in zip(axes, keys):
            vals = [[r[key] for r in by_m[str(m)]] for m in ms]
            ax.errorbar(ms, [np.mean(v) for v in vals], yerr=[np.std(v, ddof=1) if len(v) > 1 else 0 for v in vals],
                        marker="o", capsize=3, label=label)
            ax.set(xscale="log", xlabel="m (images per perturbation group)", title=title)
            ax.set_xticks(ms, [str(m) for m in ms])
    axes[0].legend()
    fig.suptitle(f"demo task, batch {args.batch}, {len(args.seeds)} seeds: mean ± std", fontsize=10)
    save_png(fig, out, NAME)


@keeps_threads
def main():
    p = parser(__doc__, NAME)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--m", type=int, nargs="+", default=[8, 32, 128], help="group sizes; the batch = one group")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rho", type=float, default=0.1)
    p.add_argument("--alpha", type=float, default=0.3, help="GSAM's alpha (the best of Sec. 4's grid)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=0.1)
    args = p.parse_args()
    out, t0 = start(args), time.time()
    data = load_demo_data(args.demo_root)
    methods = {"SAM": {"name": "sam", "rho_max": args.rho},
               "GSAM": {"name": "gsam", "rho_max": args.rho, "alpha": args.alpha}}
    results = {label: {str(m): [] for m in args.m} for label in methods}
    print("| method | m | val top-1 (%) | h during training | h at the end |\n|---|---|---|---|---|")
    for label, method in methods.items():
        for m in args.m:
            runs = results[label][str(m)]
            runs += [one_run(data, method, m, seed, args) for seed in args.seeds]
            cols = [np.array([r[k] for r in runs]) for k in ("val_top1", "step_gap", "final_gap")]
            print(f"| {label} | {m} | " + " | ".join(f"{c.mean():.4g} ± {c.std(ddof=1) if len(c) > 1 else 0:.2g}"
                                                     for c in cols) + " |", flush=True)
    plot(results, args, out)
    save_json(out, NAME, {"args": vars(args), "results": results}, t0)
    print(f"wrote {out}/{NAME}.png and .json in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
