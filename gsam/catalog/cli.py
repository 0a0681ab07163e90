"""The listing printed: one line per item (Table 1's marked ``[T1]``), a method's keys on the line below it."""
from __future__ import annotations

import argparse

from . import Entry, list_experiments, list_methods, list_models

MARKS = {"table1": "[T1]", "table6": "[T6]", "variant": "[var]", "other": ""}
LEGEND = ("[T1] a row (or a model) of the GSAM paper's Table 1; [T6] an arm of its Table 6; [var] an efficient "
          "variant on a Table 1 model")


def _lines(title: str, entries: list[Entry], keys: bool = False) -> list[str]:
    width = max((len(e.name) for e in entries), default=0)
    out = [f"{title} ({len(entries)}):"]
    for e in entries:
        out.append(f"  {MARKS[e.role]:<5} {e.name:<{width}}  {e.summary}".rstrip())
        if keys and e.detail:
            out.append(f"  {'':<5} {'':<{width}}  keys: {' '.join(e.detail)}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gsam.catalog", description="List the methods, models and "
                                 "experiments of this checkout. " + LEGEND)
    ap.add_argument("what", nargs="?", choices=("methods", "models", "experiments"), help="default: all three")
    ap.add_argument("--table1", action="store_true", help="models and experiments of Table 1 only")
    args = ap.parse_args(argv)
    role = "table1" if args.table1 else None
    sections = []
    if args.what in (None, "methods"):
        sections.append(_lines("methods, sam=<name>", list_methods(), keys=True))
    if args.what in (None, "models"):
        sections.append(_lines("models, model=<name>", [m for m in list_models() if role in (None, m.role)]))
    if args.what in (None, "experiments"):
        sections.append(_lines("experiments, +experiment=<name>", list_experiments(role=role)))
    print("\n\n".join("\n".join(s) for s in sections))
    print(f"\n{LEGEND}")
    return 0
