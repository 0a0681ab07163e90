"""Loss-surface slices around trained weights: 1-D along the gradient, GSAM's g_perp and a random
filter-normalised direction (Li et al., 2018), and a 2-D contour on two random filter-normalised
directions.

Default: the demo MLP trained with vanilla SGD and with GSAM (same seed), slices on the training
set. With ``--checkpoint``: the trainer checkpoint alone, on a fixed subset of its training images.
Gradient and g_perp directions have unit norm (the axis is a distance in weight space); the random
ones have the norm of the weights they cover (the axis is relative to the weights).

    PYTHONPATH=. python scripts/studies/loss_surface.py
    PYTHONPATH=. python scripts/studies/loss_surface.py --checkpoint outputs/demo_gsam/checkpoints/last.pt
"""
import time

import numpy as np
import torch.nn.functional as F

from gsam.analysis import direction, loss_slice_1d, loss_slice_2d, random_filter_normalized_direction
from gsam.studies.checkpoint_task import checkpoint_task
from gsam.studies.cli import keeps_threads, parser, pyplot, save_json, save_png, start
from gsam.studies.demo_task import TrainSpec, demo_mlp, load_demo_data, train_demo

NAME = "loss_surface"
KINDS = ("gradient", "g_perp", "random")


def slices(model, criterion, batches, rho, span1, span_rand, n1, n2):
    res = {}
    for kind in KINDS:
        span = span_rand if kind == "random" else span1
        xs = np.linspace(-span, span, n1)
        d = direction(kind, model, criterion, batches, rho=rho, seed=0)
        res[kind] = {"x": xs.tolist(), "loss": loss_slice_1d(model, criterion, batches, d, xs).tolist()}
    g = np.linspace(-span_rand, span_rand, n2)
    d1 = random_filter_normalized_direction(model, seed=1)
    d2 = random_filter_normalized_direction(model, seed=2)
    grid = loss_slice_2d(model, criterion, batches, d1, d2, g, g)
    res["2d"] = {"x": g.tolist(), "y": g.tolist(), "loss": grid.tolist()}
    return res


@keeps_threads
def main():
    p = parser(__doc__, NAME)
    p.add_argument("--rho", type=float, default=0.1, help="GSAM's rho, and the radius of f_p for g_perp")
    p.add_argument("--alpha", type=float, default=0.3)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--span", type=float, default=1.0, help="gradient/g_perp axis: -span..span (weight distance)")
    p.add_argument("--span-random", type=float, default=0.5, help="random axes: -s..s (relative to the weights)")
    p.add_argument("--points", type=int, default=41)
    p.add_argument("--grid", type=int, default=21)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--data-root", default=None)
    p.add_argument("--images", type=int, default=512, help="with --checkpoint: training images used")
    args = p.parse_args()
    out, t0 = start(args), time.time()
    models = {}
    if args.checkpoint:
        model, batches, criterion = checkpoint_task(args.checkpoint, images=args.images, data_root=args.data_root)
        models["checkpoint"] = model
    else:
        data = load_demo_data(args.demo_root)
        batches, criterion = data.batches("train", 512), F.cross_entropy
        for label, method in (("SGD", {"name": "none"}),
                              (f"GSAM α={args.alpha}", {"name": "gsam", "rho_max": args.rho, "alpha": args.alpha})):
            model = demo_mlp(seed=args.seed)
            train_demo(model, data, TrainSpec(method=method, epochs=args.epochs, seed=args.seed))
            models[label] = model
    result = {label: slices(m, criterion, batches, args.rho, args.span, args.span_random, args.points, args.grid)
              for label, m in models.items()}
    plt = pyplot()
    fig, axes = plt.subplots(1, 3 + len(models), figsize=(4 * (3 + len(models)), 3.5))
    for i, kind in enumerate(KINDS):
        for label, r in result.items():
            axes[i].plot(r[kind]["x"], r[kind]["loss"], label=label)
        axes[i].set(xlabel=f"step along {kind}" + (" (filter-normalised)" if kind == "random" else ""),
                    ylabel="train loss", title=f"1-D: {kind}")
        axes[i].legend()
    for ax, (label, r) in zip(axes[3:], result.items()):
        cs = ax.contour(r["2d"]["x"], r["2d"]["y"], np.log10(np.array(r["2d"]["loss"])), levels=15)
        ax.clabel(cs, fontsize=6)
        ax.set(title=f"2-D random: log10 loss, {label}", aspect="equal")
    save_png(fig, out, NAME)
    summary = {label: {kind: {"loss_at_0": r[kind]["loss"][len(r[kind]["x"]) // 2],
                              "max_on_slice": max(r[kind]["loss"])} for kind in KINDS}
               for label, r in result.items()}
    save_json(out, NAME, {"rho": args.rho, "alpha": args.alpha, "summary": summary, "slices": result}, t0)
    for label, s in summary.items():
        print(label + ": " + ", ".join(f"{k}: f(0) {v['loss_at_0']:.4f}, max {v['max_on_slice']:.3f}"
                                       for k, v in s.items()))
    print(f"wrote {out}/{NAME}.png and .json in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
