"""Print a Markdown table comparing finished runs: final evaluation and the last logged train metrics.

    python scripts/compare_runs.py outputs/demo_vanilla outputs/demo_gsam
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gsam.runlog import read_metrics  # noqa: E402


def last_train_metrics(run: Path) -> dict:
    train = read_metrics(run).get("train", [])
    return train[-1] if train else {}


def cell(value, fmt: str) -> str:
    """``fmt`` of a number; "—" where there is none (vanilla has no perturbation, so no h and no 2h/rho^2),
    as make_table.py writes it."""
    return "—" if value is None or value != value else format(float(value), fmt)


def main(runs: list[str]) -> None:
    print("| run | set | top-1 (%) | top-5 (%) | final train loss | surrogate gap h | 2h/rho^2 | steps |")
    print("|---|---|---|---|---|---|---|---|")
    for run in map(Path, runs):
        res = json.loads((run / "results.json").read_text())
        train = last_train_metrics(run)
        for name, m in res["results"].items():
            if "top5" not in m:  # the robustness sets: see results.md / make_table.py
                continue
            perturbed = bool(train.get("rho"))
            gap = train.get("surrogate_gap") if perturbed else None
            sharp = train.get("sharpness") if perturbed else None
            print(f"| {res['name']} | {name} | {m['top1']:.2f} | {m['top5']:.2f} | {cell(train.get('loss'), '.4f')} "
                  f"| {cell(gap, '.4f')} | {cell(sharp, '.2f')} | {res['step']} |")


def parse_args(argv: list[str]) -> list[str]:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="run folders (each with the results.json a finished run writes)")
    runs = ap.parse_args(argv).runs
    missing = [r for r in runs if not (Path(r) / "results.json").is_file()]
    if missing:
        ap.exit(2, f"error: {missing[0]}: no results.json there (not a finished run folder)\n")
    return runs


if __name__ == "__main__":
    main(parse_args(sys.argv[1:]))
