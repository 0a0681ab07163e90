"""Table 2 and Fig. 6 (right) at small scale: GSAM (min(f_p, h)) against descending on f_p + lam h
directly (``sam=weighted_gap``) and against min(f, h) (``sam=gsam_min_f``), with vanilla and SAM for
reference: validation accuracy on the demo task, several seeds, mean +- std.

As in the paper, alpha (GSAM, min(f, h)) and lam (weighted sum) are searched on the same grid and the
best value of each method is reported; here "best" is chosen on the same validation set that is
reported (there is no third split at this size), which favours every searched method alike.

    PYTHONPATH=. python scripts/studies/gsam_vs_baselines.py --seeds 0 1 2
"""
import time

import numpy as np

from gsam.studies.cli import keeps_threads, parser, pyplot, save_json, save_png, start
from gsam.studies.demo_task import TrainSpec, accuracy, demo_mlp, load_demo_data, train_demo

NAME = "gsam_vs_baselines"


def variants(rho, grid):
    """(label, method, coefficient name or None, coefficient grid)."""
    return [("vanilla", {"name": "none"}, None, [None]),
            ("SAM", {"name": "sam", "rho_max": rho}, None, [None]),
            ("GSAM min(f_p, h)", {"name": "gsam", "rho_max": rho}, "alpha", grid),
            ("min(f_p + λh)", {"name": "weighted_gap", "rho_max": rho}, "lam", grid),
            ("min(f, h)", {"name": "gsam_min_f", "rho_max": rho}, "alpha", grid)]


@keeps_threads
def main():
    p = parser(__doc__, NAME)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rho", type=float, default=0.1)
    p.add_argument("--grid", type=float, nargs="+", default=[0.1, 0.3, 0.6], help="alpha / lam values searched")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd")
    args = p.parse_args()
    out, t0 = start(args), time.time()
    data = load_demo_data(args.demo_root)
    lr = 0.1 if args.optimizer == "sgd" else 3e-3
    wd = 5e-4 if args.optimizer == "sgd" else 0.05
    table = []
    for label, method, coef, values in variants(args.rho, args.grid):
        rows = []
        for value in values:
            m = dict(method, **({coef: value} if coef else {}))
            accs = []
            for seed in args.seeds:
                model = demo_mlp(seed=seed)
                spec = TrainSpec(method=m, epochs=args.epochs, seed=seed, optimizer=args.optimizer, lr=lr,
                                 lr_min=lr / 100, weight_decay=wd)
                train_demo(model, data, spec)
                accs.append(accuracy(model, data.val_x, data.val_y))
            rows.append({"coef": coef, "value": value, "val_top1": accs, "mean": float(np.mean(accs)),
                         "std": float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0})
            print(f"{label} {coef or ''} {value if value is not None else ''}: "
                  f"{rows[-1]['mean']:.2f} +- {rows[-1]['std']:.2f}", flush=True)
        best = max(rows, key=lambda r: r["mean"])
        table.append({"method": label, "best": best, "all": rows})
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    names = [t["method"] for t in table]
    ax.bar(range(len(table)), [t["best"]["mean"] for t in table], yerr=[t["best"]["std"] for t in table],
           capsize=4, color=["0.6", "tab:green", "tab:red", "tab:blue", "tab:purple"])
    lo = min(min(t["best"]["val_top1"]) for t in table)
    ax.set_ylim(lo - 1.0, 100.0)
    ax.set_xticks(range(len(table)), [f"{n}\n" + (f"{t['best']['coef']}={t['best']['value']}" if t["best"]["coef"]
                                                   else "") for n, t in zip(names, table)], fontsize=8)
    ax.set(ylabel="val top-1 (%)", title=f"demo task, {len(args.seeds)} seeds, ρ = {args.rho}: mean ± std")
    save_png(fig, out, NAME)
    save_json(out, NAME, {"rho": args.rho, "grid": args.grid, "seeds": args.seeds, "epochs": args.epochs,
                          "optimizer": args.optimizer, "table": table}, t0)
    print("| method | best coefficient | val top-1 (%) mean ± std |\n|---|---|---|")
    for t in table:
        b = t["best"]
        print(f"| {t['method']} | {(b['coef'] + ' = ' + str(b['value'])) if b['coef'] else '-'} | "
              f"{b['mean']:.2f} ± {b['std']:.2f} |")
    print(f"wrote {out}/{NAME}.png and .json in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
