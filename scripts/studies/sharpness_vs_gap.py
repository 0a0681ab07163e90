"""Lemma 3.3 / Fig. 4: sigma_max by power iteration against its estimate 2h/rho^2 from the surrogate gap.

1. A quadratic with a known Hessian (linear regression, sigma_max = 5), near its minimum and displaced
   along the top eigenvector (the lemma's conditions): the two must agree within 2%.
2. The demo task (digits, small MLP), trained with GSAM at constant rho for every (rho, alpha):
   validation accuracy, sigma_max (power iteration on a fixed subset of training images) and 2h/rho^2
   (on the whole training set), as the three panels of Fig. 4. With ``--checkpoint``, a trainer
   checkpoint is measured instead (sigma_max and 2h/rho^2 for each rho; no training).

    PYTHONPATH=. python scripts/studies/sharpness_vs_gap.py
    PYTHONPATH=. python scripts/studies/sharpness_vs_gap.py --checkpoint outputs/demo_gsam/checkpoints/last.pt
"""
import time

import torch
import torch.nn.functional as F

from gsam.analysis import dominant_eigenvalue, surrogate_gaps
from gsam.studies.checkpoint_task import checkpoint_task
from gsam.studies.cli import keeps_threads, parser, pyplot, save_json, save_png, start
from gsam.studies.demo_task import TrainSpec, accuracy, demo_mlp, load_demo_data, train_demo
from gsam.studies.stats import rank_correlation
from gsam.studies.synthetic import half_mse

NAME = "sharpness_vs_gap"


def quadratic(rhos):
    """f(w) = 1/2 mean (x.w - y)^2 with X^T X / n = Q diag(5, 2, 1, 0.5, 0.1) Q^T, at w* + 1e-5 q_1."""
    g = torch.Generator().manual_seed(0)
    ev = torch.tensor([5.0, 2.0, 1.0, 0.5, 0.1], dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(5, 5, generator=g, dtype=torch.float64))
    z, _ = torch.linalg.qr(torch.randn(200, 5, generator=g, dtype=torch.float64))
    x = 200 ** 0.5 * z @ torch.diag(ev.sqrt()) @ q.T
    w_star = torch.randn(5, generator=g, dtype=torch.float64)
    model = torch.nn.Linear(5, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(w_star + 1e-5 * q[:, 0])
    batches = list(zip(x.split(50), (x @ w_star).split(50)))
    eig = dominant_eigenvalue(model, half_mse, batches, iters=500, tol=1e-12)
    gaps = surrogate_gaps(model, half_mse, batches, rhos)
    return {"sigma_max_true": 5.0, "sigma_max_power": eig.eigenvalue,
            "rows": [{"rho": gp.rho, "sharpness": gp.sharpness, "rel_error": abs(gp.sharpness / 5.0 - 1)}
                     for gp in gaps]}


def measure(model, criterion, eig_batches, gap_batches, rhos, iters):
    eig = dominant_eigenvalue(model, criterion, eig_batches, iters=iters, tol=1e-4)
    return eig, surrogate_gaps(model, criterion, gap_batches, rhos)


@keeps_threads
def main():
    p = parser(__doc__, NAME)
    p.add_argument("--rhos", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    p.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.2, 0.4, 0.8])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--power-iters", type=int, default=100)
    p.add_argument("--eig-images", type=int, default=512, help="training images for the power iteration")
    p.add_argument("--checkpoint", default=None, help="a trainer checkpoint to measure instead of training")
    p.add_argument("--data-root", default=None, help="with --checkpoint: override the config's data.root")
    args = p.parse_args()
    out, t0 = start(args), time.time()
    result = {"quadratic": quadratic(args.rhos)}
    plt = pyplot()
    if args.checkpoint:
        model, batches, criterion = checkpoint_task(args.checkpoint, images=args.eig_images, data_root=args.data_root)
        eig, gaps = measure(model, criterion, batches, batches, args.rhos, args.power_iters)
        result["checkpoint"] = {"path": args.checkpoint, "sigma_max": eig.eigenvalue, "converged": eig.converged,
                                "gaps": [g.as_dict() for g in gaps]}
        fig, ax = plt.subplots(figsize=(4.5, 3.5))
        ax.plot(args.rhos, [g.sharpness for g in gaps], "o-", label="2h/ρ²")
        ax.axhline(eig.eigenvalue, color="k", ls="--", label="σ_max (power iteration)")
        ax.set(xlabel="ρ", ylabel="sharpness", title="checkpoint")
        ax.legend()
    else:
        data = load_demo_data(args.demo_root)
        eig_batches = data.batches("train", 256, args.eig_images)
        gap_batches = data.batches("train", 512)
        runs = []
        for rho in args.rhos:
            for alpha in args.alphas:
                model = demo_mlp(seed=args.seed)
                spec = TrainSpec(method={"name": "gsam", "rho_max": rho, "alpha": alpha}, epochs=args.epochs,
                                 seed=args.seed)
                train_demo(model, data, spec)
                eig, (gap,) = measure(model, F.cross_entropy, eig_batches, gap_batches, [rho], args.power_iters)
                runs.append({"rho": rho, "alpha": alpha, "val_top1": accuracy(model, data.val_x, data.val_y),
                             "sigma_max": eig.eigenvalue, "power_converged": eig.converged, **gap.as_dict()})
                print(f"rho {rho} alpha {alpha}: sigma_max {eig.eigenvalue:.3f}  2h/rho^2 {gap.sharpness:.3f}  "
                      f"val {runs[-1]['val_top1']:.2f}%", flush=True)
        sig = [r["sigma_max"] for r in runs]
        est = [r["sharpness"] for r in runs]
        result["demo"] = {"runs": runs, "spearman_sigma_vs_estimate": rank_correlation(sig, est),
                          "per_rho_spearman": {str(rho): rank_correlation(
                              [r["sigma_max"] for r in runs if r["rho"] == rho],
                              [r["sharpness"] for r in runs if r["rho"] == rho]) for rho in args.rhos}}
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
        for rho in args.rhos:
            rs = [r for r in runs if r["rho"] == rho]
            for ax, key in zip(axes, ("val_top1", "sigma_max", "sharpness")):
                ax.plot([r["alpha"] for r in rs], [r[key] for r in rs], "o-", label=f"ρ = {rho}")
        for ax, title in zip(axes, ("val top-1 (%)", "σ_max, power iteration", "2h/ρ², surrogate gap")):
            ax.set(xlabel="α", title=title)
            ax.legend()
    save_png(fig, out, NAME)
    save_json(out, NAME, result, t0)
    q = result["quadratic"]
    print(f"quadratic: power iteration {q['sigma_max_power']:.6f} (true 5); 2h/rho^2 " +
          ", ".join(f"rho {r['rho']}: {r['sharpness']:.4f}" for r in q["rows"]))
    if "demo" in result:
        print(f"demo: Spearman(sigma_max, 2h/rho^2) over all runs = {result['demo']['spearman_sigma_vs_estimate']:.3f}")
    print(f"wrote {out}/{NAME}.png and .json in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
