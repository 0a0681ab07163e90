"""The best setting of each model (and method) among finished search runs, by MINIVAL top-1, with the table of
every point: the selection step of the GSAM paper's App. B.1 searches (scripts/sweep.py search=...).

    python scripts/select_best.py multirun/search_gsam_rho_vit_b32/*/
    python scripts/select_best.py multirun/search_*/*/ --keys sam.rho_max sam.alpha

A run is a folder with config.yaml and results.json (train.py's). Only runs evaluated on minival
(data.val_split=minival) count: a run evaluated on val is skipped with a note, never used to choose. Ties go to
the first run in the order given. Exit status 2 when no run can be used.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gsam.evaluation.table1 import load_run  # noqa: E402

# the keys App. B.1 searches; a column only when it differs between runs of one model and method
SEARCHED = ("optimizer.lr", "optimizer.weight_decay", "sam.rho_max", "sam.rho_min", "sam.alpha")


def _get(cfg, key: str):
    node = cfg
    for part in key.split("."):
        node = node.get(part) if node is not None else None
    return node


def read_points(runs: list[Path], keys) -> tuple[list[dict], list[str]]:
    """(points, notes): each minival run's model, method, searched keys and top-1; a note per run left out."""
    from omegaconf import OmegaConf

    points, notes = [], []
    for run in runs:
        if not (run / "config.yaml").exists():
            notes.append(f"skipped {run}: no config.yaml (not a run folder)")
            continue
        cfg = OmegaConf.load(run / "config.yaml")
        split = _get(cfg, "data.val_split")
        if split != "minival":
            notes.append(f"skipped {run}: evaluated on {split}, not minival (a search never chooses on val)")
            continue
        try:
            res = load_run(run)
        except (FileNotFoundError, ValueError) as e:
            notes.append(f"skipped {run}: {e}")
            continue
        points.append({"run": str(run), "model": _get(cfg, "model.short"), "method": res["method"],
                       "setting": {k: _get(cfg, k) for k in keys}, "top1": res["results"]["val"]["top1"]})
    return points, notes


def best_per_model(points: list[dict]) -> dict[tuple[str, str], dict]:
    best: dict[tuple[str, str], dict] = {}
    for p in points:
        key = (p["model"], p["method"])
        if key not in best or p["top1"] > best[key]["top1"]:
            best[key] = p
    return best


def markdown(points: list[dict], best: dict) -> str:
    varying = [k for k in SEARCHED if len({str(p["setting"].get(k)) for p in points}) > 1]
    cols = ["model", "method", *varying, "minival top-1 (%)", "best"]
    rows = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for p in sorted(points, key=lambda p: (p["model"], p["method"])):
        mark = "**best**" if best[p["model"], p["method"]] is p else ""
        cells = [p["model"], p["method"], *(f"{p['setting'][k]:g}" for k in varying), f"{p['top1']:.2f}", mark]
        rows.append("| " + " | ".join(cells) + " |")
    winners = [f"{m} {k}: " + (", ".join(f"{key}={b['setting'][key]:g}" for key in varying) or "(one point)")
               + f" (minival top-1 {b['top1']:.2f}, {b['run']})" for (m, k), b in sorted(best.items())]
    return "\n".join(rows) + "\n\nbest per model, by minival top-1:\n" + "\n".join(winners) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--keys", nargs="+", default=list(SEARCHED), help="the searched config keys to show")
    args = ap.parse_args(argv)
    points, notes = read_points(args.runs, args.keys)
    for n in notes:
        print(f"select_best: {n}", file=sys.stderr)
    if not points:
        print("error: no finished run evaluated on minival among the folders given", file=sys.stderr)
        return 2
    print(markdown(points, best_per_model(points)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
