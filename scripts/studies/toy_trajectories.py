"""GSAM's Fig. 3 and XSAM's Fig. 3a: trajectories of SGD, SAM, GSAM and XSAM on a 2-D loss with a
sharp and a flat minimum, drawn over its contour plot.

The loss is 1 - exp(-|w - c_s|^2 / (2 0.1^2)) - exp(-|w - c_f|^2 / (2 0.7^2)) + 0.01 |w|^2 (a sharp
well at c_s = (0.5, 0.4), a flat one at c_f = (-0.6, -0.4), equally deep). Every method is the
library's optimizer (gsam.Vanilla/SAM/GSAM/XSAM through the factory) on a 2-parameter model, with
plain SGD (lr 0.01, no momentum) as the base, from starts on a circle of radius 0.2 around the
sharp minimum. The JSON records where each run ends: the sharp well, the flat one, or neither.

    PYTHONPATH=. python scripts/studies/toy_trajectories.py
"""
import math
import time

import numpy as np
import torch

from gsam.studies.cli import keeps_threads, parser, pyplot, save_json, save_png, start
from gsam.studies.toy import sharp_and_flat, trajectory

NAME = "toy_trajectories"
COLORS = {"SGD": "tab:orange", "SAM": "tab:green", "GSAM": "tab:red", "XSAM": "tab:purple"}


def methods(rho, alpha):
    return {"SGD": {"name": "none"}, "SAM": {"name": "sam", "rho_max": rho},
            "GSAM": {"name": "gsam", "rho_max": rho, "alpha": alpha},
            "XSAM": {"name": "xsam", "rho_max": rho, "rho_probe": 2 * rho, "search_every": 1}}


@keeps_threads
def main():
    p = parser(__doc__, NAME)
    p.add_argument("--rho", type=float, default=0.35)
    p.add_argument("--alpha", type=float, default=0.3, help="GSAM's alpha")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--starts", type=int, default=4, help="start points on the circle around the sharp minimum")
    p.add_argument("--draw", type=int, nargs="+", default=[0, 2], help="which starts to draw")
    args = p.parse_args()
    out, t0 = start(args), time.time()
    fn = sharp_and_flat()
    sharp = np.array(fn.wells[0].center)
    names = {0: "sharp", 1: "flat", -1: "neither"}
    runs, paths = [], {}
    for i in range(args.starts):
        a = 2 * math.pi * i / args.starts
        w0 = (float(sharp[0] + 0.2 * math.cos(a)), float(sharp[1] + 0.2 * math.sin(a)))
        for m, cfg in methods(args.rho, args.alpha).items():
            path = trajectory(fn, w0, cfg, lr=args.lr, steps=args.steps)
            end = path[-1]
            paths[(i, m)] = path.numpy()
            runs.append({"start": w0, "method": m, "end": end.tolist(), "loss": fn(end).item(),
                         "ends_in": names[fn.well_of(end.tolist())],
                         "distance_to_sharp_minimum": float(np.linalg.norm(end.numpy() - sharp))})
    summary = {m: {k: sum(r["ends_in"] == k and r["method"] == m for r in runs) for k in names.values()}
               for m in COLORS}
    plt = pyplot()
    g = np.linspace(-1.8, 1.2, 241)
    xx, yy = np.meshgrid(g, g)
    zz = fn(torch.tensor(np.stack([xx, yy], -1))).numpy()
    fig, axes = plt.subplots(1, len(args.draw), figsize=(5.2 * len(args.draw), 4.6))
    for ax, i in zip(np.atleast_1d(axes), args.draw):
        ax.contourf(xx, yy, zz, levels=30, cmap="Blues_r")
        ax.contour(xx, yy, zz, levels=30, colors="k", linewidths=0.2)
        for m, c in COLORS.items():
            pth = paths[(i, m)]
            ax.plot(pth[:, 0], pth[:, 1], color=c, lw=1.6, ls="--" if m == "SAM" else "-", label=m)
            ax.plot(pth[-1, 0], pth[-1, 1], "o", color=c, ms=6, mec="k")
        ax.plot(*paths[(i, "SGD")][0], "k*", ms=10)
        w0 = paths[(i, "SGD")][0]
        ax.set(title=f"start ({w0[0]:.2f}, {w0[1]:.2f}), ρ = {args.rho}, α = {args.alpha}", aspect="equal")
        ax.legend(loc="lower right")
    save_png(fig, out, NAME)
    save_json(out, NAME, {"rho": args.rho, "alpha": args.alpha, "lr": args.lr, "steps": args.steps,
                          "wells": [w.__dict__ for w in fn.wells], "summary": summary, "runs": runs}, t0)
    for m, s in summary.items():
        print(f"{m}: " + ", ".join(f"{k} {v}" for k, v in s.items()))
    print(f"wrote {out}/{NAME}.png and .json in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
