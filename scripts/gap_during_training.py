"""Fig. 9 / Thm 5.3: the surrogate gap h during training for alpha in {0, 0.1, 0.2, 0.3}.

GSAM at constant rho; h = f_p - f is measured on a fixed set of training data (eval mode) as
training goes. Two tasks:
  --task demo       the demo digits with the small MLP (minibatch SGD, h on 512 fixed images, per epoch)
  --task synthetic  a tanh network regressing a linear teacher, full batch and noise-free (every 10 steps)
The JSON says, for every seed, whether the final h is strictly decreasing in alpha.

    PYTHONPATH=. python scripts/gap_during_training.py --task demo --seeds 0 1 2
    PYTHONPATH=. python scripts/gap_during_training.py --task synthetic --seeds 0 1 2 3 4 5
"""
import time

import torch.nn.functional as F

from gsam.analysis import surrogate_gap
from gsam.analysis.demo_task import TrainSpec, demo_mlp, load_demo_data, train_demo
from gsam.analysis.report import parser, pyplot, save_json, save_png, start
from gsam.analysis.synthetic import teacher_task, train_full_batch

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


def main():
    p = parser(__doc__, NAME)
    p.add_argument("--task", choices=("demo", "synthetic"), default="demo")
    p.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3])
    p.add_argument("--rho", type=float, default=None, help="default: 0.1 (both tasks)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--epochs", type=int, default=20, help="demo: epochs")
    p.add_argument("--steps", type=int, default=400, help="synthetic: full-batch steps")
    args = p.parse_args()
    out, t0 = start(args), time.time()
    out = out / args.task
    out.mkdir(exist_ok=True)
    rho = args.rho if args.rho is not None else 0.1
    data = load_demo_data(args.demo_root) if args.task == "demo" else None
    curves, verdicts = {}, {}
    for seed in args.seeds:
        for alpha in args.alphas:
            if args.task == "demo":
                xs, hs = demo_curve(data, alpha, rho, seed, args.epochs)
            else:
                xs, hs = synthetic_curve(alpha, rho, seed, args.steps)
            curves[f"seed{seed}_alpha{alpha}"] = {"seed": seed, "alpha": alpha, "x": xs, "h": hs}
        final = [curves[f"seed{seed}_alpha{a}"]["h"][-1] for a in args.alphas]
        verdicts[seed] = {"final_h": final, "decreasing_in_alpha": all(a > b for a, b in zip(final, final[1:])),
                          "largest_alpha_below_zero_alpha": final[-1] < final[0]}
        print(f"seed {seed}: final h " + ", ".join(f"alpha {a}: {h:.5f}" for a, h in zip(args.alphas, final)) +
              f"  -> decreasing in alpha: {verdicts[seed]['decreasing_in_alpha']}", flush=True)
    held = sum(v["decreasing_in_alpha"] for v in verdicts.values())
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    first = args.seeds[0]
    for alpha in args.alphas:
        c = curves[f"seed{first}_alpha{alpha}"]
        ax.plot(c["x"], c["h"], label=f"α = {alpha}")
    ax.set(xlabel="epoch" if args.task == "demo" else "step", ylabel=f"surrogate gap h (ρ = {rho})",
           title=f"{args.task} task, seed {first}; ordering held for {held}/{len(args.seeds)} seeds")
    ax.legend()
    save_png(fig, out, NAME)
    save_json(out, NAME, {"task": args.task, "rho": rho, "alphas": args.alphas, "seeds": args.seeds,
                          "ordering_held": held, "verdicts": verdicts, "curves": curves}, t0)
    print(f"final h strictly decreasing in alpha for {held}/{len(args.seeds)} seeds; wrote {out}/{NAME}.png "
          f"and .json in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
