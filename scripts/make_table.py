"""Collect finished runs into the layout of the GSAM paper's Table 1, the paper's numbers beside ours, and Table 6's
ViT-B/32 ablation when its runs are among them (configs/experiment/vit_b32_table6_*.yaml).

    python scripts/make_table.py outputs/*/ --out outputs/table1        # writes table1.md and table1.csv
    python scripts/make_table.py multirun/table6/*/ outputs/vit_b32_vanilla    # Table 6 (vanilla from Table 1's run)

Table 1's ViT-B/32 vanilla, SAM and GSAM cells also show Table 6's numbers, the paper's runs of that model inside
GSAM's own recipe (Table 1's SAM numbers are Chen et al. 2021's, with their own recipe and rho).

Each argument is a run folder (or a results.json) written by train.py or evaluate.py; a folder that is not a run
(the demo's data beside its runs in outputs/) is skipped with a note, a run without results.json is an error.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gsam.evaluation.table1 import is_run_dir, load_run, markdown, rows, to_csv  # noqa: E402
from gsam.evaluation.table6 import table6_arm, table6_markdown, table6_rows  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, help="prefix of the .md and .csv files (default: print Markdown only)")
    args = ap.parse_args(argv)
    runs = [p for p in args.runs if not p.is_dir() or is_run_dir(p)]
    for p in sorted(set(args.runs) - set(runs)):  # e.g. outputs/demo_data beside the demo's runs in outputs/*/
        print(f"make_table: skipped {p} (not a run folder: no config.yaml, metrics.jsonl or results.json)",
              file=sys.stderr)
    try:
        if not runs:
            raise FileNotFoundError(f"no run folder among {', '.join(map(str, args.runs))}")
        loaded = [load_run(p) for p in runs]
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # Table 6's runs have a layout of their own (two of them are (vit_b32, gsam) runs, as Table 1's GSAM row is)
    ablation = [r for r in loaded if table6_arm(r)]
    others = [r for r in loaded if not table6_arm(r)]
    table, table6 = rows(others), table6_rows(ablation, others) if ablation else []
    md = markdown(table) + (f"\n{table6_markdown(table6)}" if table6 else "")
    print(md)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".md").write_text(md)
        args.out.with_suffix(".csv").write_text(to_csv(table + table6))
    return 0


if __name__ == "__main__":
    sys.exit(main())
