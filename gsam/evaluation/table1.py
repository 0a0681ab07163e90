"""Table 1 of the GSAM paper next to ours: a run's Table 1 columns, collecting runs, Markdown and CSV. The
paper's models, methods and numbers are data in gsam/evaluation/tables.py.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from gsam.evaluation.table6 import TABLE1_ARMS
from gsam.evaluation.tables import (TABLE1_METHODS, TABLE1_MODELS, TABLE6_MODEL, TABLE6_PAPER, is_table1_row,
                                    paper_table1)

# r: ImageNet-R with the argmax over all 1000 classes, the protocol Table 1's R most likely used (docs/data.md);
# r_masked: the argmax over ImageNet-R's 200 classes (hendrycks, timm), for which the paper has no number
COLUMNS = ("imagenet", "real", "v2", "r", "r_masked", "c")
HEADERS = {"imagenet": "ImageNet", "real": "ReaL", "v2": "V2", "r": "R", "r_masked": "R masked", "c": "C"}


# Table 1's columns and where each comes from: (the evaluation set whose metrics hold it, the metric). The sets are
# the data splits (val) and the entries of eval.sets (configs/eval/default.yaml). r is the argmax over all classes
# (Table 1's protocol, docs/data.md), r_masked over ImageNet-R's 200; c's mean15/19 and mCE only when complete.
COLUMN_SOURCES = {"imagenet": ("val", "top1"), "real": ("val", "real_top1"), "v2": ("v2", "top1"),
                  "r": ("r", "top1_all"), "r_masked": ("r", "top1_masked"), "c": ("c", "top1"),
                  "c_mean15": ("c", "mean15"), "c_mean19": ("c", "mean19"), "c_mce": ("c", "mce15")}


def table1_row(results: dict) -> dict:
    """Table 1's columns (top-1 %, and ImageNet-C's mCE) from the evaluators' results, ``COLUMN_SOURCES``."""
    row = {col: results[name][metric] for col, (name, metric) in COLUMN_SOURCES.items()
           if metric in results.get(name, {})}
    return {k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}


def results_markdown(results: dict) -> str:
    """One row per evaluated set (ReaL, ImageNet-R's two protocols and the ImageNet-C summary get rows of
    their own)."""
    lines = ["| set | top-1 (%) | top-5 (%) | images |", "|---|---|---|---|"]
    for name, m in results.items():
        if "per_corruption" in m:  # an ImageNet-C set
            for k, label in (("mean15", "mean of 15"), ("mean19", "mean of 19")):
                if k in m:
                    lines.append(f"| {name} ({label}) | {m[k]:.2f} | | |")
            if "mce15" in m:
                lines.append(f"| {name} mCE-15 (lower is better) | {m['mce15']:.2f} | | |")
            if "mean15" not in m and "mean19" not in m:
                lines.append(f"| {name} (mean of {len(m['per_corruption'])} found) | {m['mean_found']:.2f} | | |")
            continue
        if "top1_masked" in m:
            for label, key in (("argmax over all classes", "top1_all"), (f"masked to its {m['classes']} classes",
                                                                         "top1_masked")):
                lines.append(f"| {name} ({label}) | {m[key]:.2f} | | {m['images']} |")
            continue
        top5 = f"{m['top5']:.2f}" if "top5" in m else ""
        lines.append(f"| {name} | {m['top1']:.2f} | {top5} | {m['images']} |")
        if "real_top1" in m:
            lines.append(f"| real | {m['real_top1']:.2f} | | {m['real_images']} |")
    return "\n".join(lines)


def is_run_dir(path: Path) -> bool:
    """A folder that train.py or evaluate.py wrote (it holds what the trainer writes first or last)."""
    return any((Path(path) / f).is_file() for f in ("config.yaml", "metrics.jsonl", "results.json"))


def load_run(path: Path) -> dict:
    """A run folder (or its results.json) -> {"model", "method", "name", column: value, ...}."""
    path = Path(path)
    file = path / "results.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no results.json (has the run finished, or evaluate.py run?)")
    res = json.loads(file.read_text())
    if "model" not in res or "method" not in res:
        raise ValueError(f"{file}: no model/method fields (written by an older version; rerun evaluate.py)")
    if "r" in res and "r_masked" not in res:
        raise ValueError(f"{file}: its r is the 200-class masked ImageNet-R of an older version, not the 1000-way "
                         "number Table 1 is compared with (docs/data.md); rerun evaluate.py")
    return res


# A released model's results (evaluate.py eval.checkpoint=<file>.npz write ``released``) are a row of their own
# beside ours, "gsam (released)", compared with the same paper numbers
RELEASED = " (released)"


def _method(run: dict) -> str:
    return run["method"] + (RELEASED if run.get("released") else "")


def rows(runs: list[dict]) -> list[dict]:
    """One row per (model, method), ours beside the paper's: Table 1's rows in the paper's order, then the runs
    beside it (other models, the efficient variants), each row marked ``table1``."""
    paper = paper_table1()
    ours = {(r["model"], _method(r)): r for r in runs}
    order = [(m, k + s) for m in TABLE1_MODELS for k in TABLE1_METHODS for s in ("", RELEASED)]
    rank = {m: i for i, m in enumerate(TABLE1_METHODS)}
    keys = [k for k in order if k in ours] + sorted((k for k in ours if k not in order),
                                                    key=lambda k: (k[0], rank.get(k[1], len(rank)), k[1]))
    out = []
    for key in keys:
        base = (key[0], key[1].removesuffix(RELEASED))
        ref = paper.get(base, {})
        row = {"model": key[0], "method": key[1], "name": ours[key].get("name", ""), "table1": is_table1_row(*base)}
        for col in COLUMNS:
            a, b = ours[key].get(col), ref.get(col)
            row[col] = {"ours": a, "paper": b, "diff": a - b if a is not None and b is not None else None}
        out.append(row)
    return out


def _fmt(x, signed=False):
    if x is None:
        return "—"
    return f"{x:+.1f}" if signed else f"{x:.1f}"


# Table 1's SAM numbers are Chen et al. (2021)'s, run with their own per-model rho, which no source we could
# read gives; our SAM rows run SAM's rho from the evidence we have (configs/method/sam.yaml): not like for like
SAM_NOTE = ("† SAM: the paper's number is Chen et al. (2021)'s (Table 1 copies it), trained with their own "
            "per-model ρ; ours runs a constant ρ of our choice (0.15 for ViTs and Mixers, the middle of the paper's "
            "constant-ρ ViT-B/32 runs in Fig. 4; 0.05 for ResNets, Foret et al.'s; configs/method/sam.yaml). The "
            "difference is not ours against the paper's recipe (docs/recipe.md, \"The comparison\"; "
            "scripts/sweep.py search=sam_rho runs SAM's ρ search).")
# Table 6 ran ViT-B/32 in GSAM's own recipe: its vanilla, SAM and GSAM are the like-for-like numbers for Table 1's
# ViT-B/32 rows, shown in their ImageNet cell
TABLE6_NOTE = ("Table 6: ViT-B/32 inside GSAM's own recipe (App. C.2; the paper's like-for-like comparison): "
               "vanilla 72.0 (Table 5's 600 epochs), SAM (constant ρ) 75.8, constant ρ + ascent 76.2, decayed ρ_t "
               "75.8, GSAM 76.8; scripts/sweep.py sweep=table6 runs its four arms.")


def _table6_suffix(r: dict) -> str:
    """"; Table 6: paper (ours − paper)" in the ImageNet cell of a Table 1 ViT-B/32 row that is a Table 6 arm."""
    arm = TABLE1_ARMS.get(r["method"]) if r["model"] == TABLE6_MODEL and r["table1"] else None
    if arm is None:
        return ""
    ours, paper = r["imagenet"]["ours"], TABLE6_PAPER[arm]
    return f"; Table 6: {_fmt(paper)} ({_fmt(None if ours is None else ours - paper, True)})"


def _markdown_rows(table: list[dict]) -> list[str]:
    head = "| Model | Training | " + " | ".join(HEADERS[c] for c in COLUMNS) + " |"
    lines = [head, "|---|---|" + "---|" * len(COLUMNS)]
    for r in table:
        cells = [f"{_fmt(r[c]['ours'])} / {_fmt(r[c]['paper'])} ({_fmt(r[c]['diff'], True)})" for c in COLUMNS]
        cells[0] += _table6_suffix(r)
        method = f"{r['method']} †" if r["method"] == "sam" else r["method"]
        lines.append(f"| {r['model']} | {method} | " + " | ".join(cells) + " |")
    return lines


def markdown(table: list[dict]) -> str:
    """Table 1's rows, then a table of the runs beside it (not rows of Table 1: no paper number to compare)."""
    ours, beside = [r for r in table if r["table1"]], [r for r in table if not r["table1"]]
    parts = ["\n".join(_markdown_rows(ours))] if ours else []
    if beside:
        parts.append("Beside Table 1 (other models, the efficient variants):\n\n" + "\n".join(_markdown_rows(beside)))
    notes = ["Each cell: ours / paper (ours − paper), top-1 %; — where there is no number. R: the argmax over all "
             "the model's classes (1000), as Table 1's R most likely is (docs/data.md); R masked: over the R set's "
             "classes only (ImageNet-R's 200), which the paper does not report."]
    notes += [SAM_NOTE] if any(r["method"] == "sam" for r in ours) else []
    notes += [TABLE6_NOTE] if any(_table6_suffix(r) for r in ours) else []
    return "\n\n".join(parts + notes) + "\n"


def to_csv(table: list[dict]) -> str:
    """One line per row and column it has (a Table 6 row, method ``table6:<arm>``, has ImageNet only)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["model", "method", "name", "table1", "column", "ours", "paper", "diff"])
    for r in table:
        for c in (c for c in COLUMNS if c in r):
            numbers = ("" if r[c][k] is None else f"{r[c][k]:.4f}" for k in ("ours", "paper", "diff"))
            w.writerow([r["model"], r["method"], r["name"], int(r["table1"]), c, *numbers])
    return buf.getvalue()
