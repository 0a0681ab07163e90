"""Print a Markdown table comparing finished runs: final evaluation and the last logged train metrics.

    python scripts/compare_runs.py outputs/demo_vanilla outputs/demo_gsam
"""
import json
import sys
from pathlib import Path


def last_train_metrics(run: Path) -> dict:
    last = {}
    with open(run / "metrics.jsonl") as f:
        for line in f:
            rec = json.loads(line)
            if rec["kind"] == "train":
                last = rec
    return last


def main(runs: list[str]) -> None:
    print("| run | set | top-1 (%) | top-5 (%) | final train loss | surrogate gap h | 2h/rho^2 | steps |")
    print("|---|---|---|---|---|---|---|---|")
    for run in map(Path, runs):
        res = json.loads((run / "results.json").read_text())
        train = last_train_metrics(run)
        for name, m in res["results"].items():
            gap = train.get("surrogate_gap", float("nan"))
            sharp = train.get("sharpness", float("nan")) if train.get("rho") else float("nan")
            print(f"| {res['name']} | {name} | {m['top1']:.2f} | {m['top5']:.2f} | {train.get('loss', float('nan')):.4f} "
                  f"| {float(gap):.4f} | {float(sharp):.2f} | {res['step']} |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
