"""PNG plots of runs: training curves, and Table 1 as grouped bars (ours vs the paper).

    python scripts/plot_runs.py outputs/demo_vanilla outputs/demo_gsam --out outputs/plots
    python scripts/plot_runs.py outputs/*/ --out outputs/plots --column imagenet   # + table1_imagenet.png

curves.png: train loss f, perturbed loss f_p, surrogate gap h = f_p - f (Eq. 4) per step, and eval top-1 per
evaluation. table1_<column>.png: one group of bars per (model, method), ours beside the paper's.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from gsam.runlog import read_metrics  # noqa: E402
from gsam.evaluation.table1 import HEADERS, load_run, rows  # noqa: E402

CURVES = (("loss", "train loss f"), ("perturbed_loss", "perturbed loss f_p"), ("surrogate_gap", "surrogate gap h"))


def smooth(values: list[float], window: int) -> list[float]:
    out, acc = [], []
    for v in values:
        acc.append(v)
        if len(acc) > window:
            acc.pop(0)
        finite = [a for a in acc if math.isfinite(a)]
        out.append(sum(finite) / len(finite) if finite else float("nan"))
    return out


def plot_curves(runs: list[Path], out: Path, window: int) -> Path:
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    for i, run in enumerate(runs):
        colour = f"C{i}"  # one colour per run in every panel
        m = read_metrics(run)
        train = m.get("train", [])
        steps = [r["step"] for r in train]
        for ax, (key, title) in zip(axes.flat, CURVES):
            vals = [float(r.get(key, "nan")) for r in train]
            if any(math.isfinite(v) and v != 0 for v in vals):
                ax.plot(steps, smooth(vals, window), color=colour, label=run.name)
            ax.set_title(title)
            ax.set_xlabel("step")
        evals = m.get("val") or m.get("minival") or []
        if evals:
            axes[1, 1].plot([r["step"] for r in evals], [r["top1"] for r in evals], marker="o", color=colour, label=run.name)
    axes[1, 1].set_title("eval top-1 (%)")
    axes[1, 1].set_xlabel("step")
    for ax in axes.flat:
        if ax.lines:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out / "curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def bar_series(table: list[dict], column: str) -> dict[str, list[float]]:
    """{legend label: one value per row}; the paper's bars only where the paper has a number for some row (the
    demo's models are not in Table 1: a legend entry without bars would be noise)."""
    value = lambda v: v if v is not None else float("nan")  # noqa: E731
    series = {"ours": [value(r[column]["ours"]) for r in table]}
    if any(r[column]["paper"] is not None for r in table):
        series["paper (Table 1)"] = [value(r[column]["paper"]) for r in table]
    return series


def plot_table(runs: list[Path], out: Path, column: str) -> Path | None:
    table = rows([load_run(r) for r in runs])
    if not table:
        return None
    labels = [f"{r['model']}\n{r['method']}" for r in table]
    series = bar_series(table, column)
    x = range(len(table))
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(table) + 2), 4.5))
    for k, (label, values) in enumerate(series.items()):
        ax.bar([i + (k - (len(series) - 1) / 2) * width for i in x], values, width=width, label=label)
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.set_ylabel(f"{HEADERS[column]} top-1 (%)")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = out / f"table1_{column}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=Path("outputs/plots"))
    ap.add_argument("--column", choices=list(HEADERS), default="imagenet", help="Table 1 column of the bar chart")
    ap.add_argument("--smooth", type=int, default=10, help="moving-average window of the train curves (steps)")
    args = ap.parse_args(argv)
    missing = [r for r in args.runs if not (r / "metrics.jsonl").is_file()]
    if missing:
        print(f"error: no metrics.jsonl in {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    print(plot_curves(args.runs, args.out, args.smooth))
    if all((r / "results.json").is_file() for r in args.runs):
        try:
            print(plot_table(args.runs, args.out, args.column))
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
