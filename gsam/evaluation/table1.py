"""Table 1 of the GSAM paper next to ours: its models and methods, the paper's numbers, collecting runs,
Markdown and CSV.

The paper's numbers are top-1 accuracy (%), Table 1 of Zhuang et al., ICLR 2022, columns ImageNet-v1,
ReaL, V2, R, C; the SAM rows are Chen et al. (2021)'s. The paper has no XSAM rows (a later method).
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from gsam.config.keys import CONFIGS

PAPER_COLUMNS = ("imagenet", "real", "v2", "r", "c")
# r: ImageNet-R with the argmax over all 1000 classes, the protocol Table 1's R most likely used (docs/data.md);
# r_masked: the argmax over ImageNet-R's 200 classes (hendrycks, timm), for which the paper has no number
COLUMNS = ("imagenet", "real", "v2", "r", "r_masked", "c")
HEADERS = {"imagenet": "ImageNet", "real": "ReaL", "v2": "V2", "r": "R", "r_masked": "R masked", "c": "C"}
# a row's training method, in the table's order (XSAM, a later method, after the paper's three)
TABLE1_METHODS = ("vanilla", "sam", "gsam", "xsam")
# the one name that differs: Table 1's "vanilla" is the ``sam`` config group "none" (no perturbation)
_SAM_NAMES = {"vanilla": "none"}

_TABLE1 = """
resnet50  vanilla 76.0 82.4 63.6 22.2 44.6 | sam 76.9 83.3 64.4 23.8 46.5 | gsam 77.2 83.9 64.6 23.6 47.6
resnet101 vanilla 77.8 83.9 65.3 24.4 48.5 | sam 78.6 84.8 66.7 25.9 51.3 | gsam 78.9 85.2 67.3 26.3 51.8
resnet152 vanilla 78.5 84.2 66.3 25.3 50.0 | sam 79.3 84.9 67.3 25.7 52.2 | gsam 80.0 85.9 68.6 27.3 54.1
vit_s32   vanilla 68.4 75.2 54.3 19.0 43.3 | sam 70.5 77.5 56.9 21.4 46.2 | gsam 73.8 80.4 60.4 22.5 48.2
vit_s16   vanilla 74.4 80.4 61.7 20.0 46.5 | sam 78.1 84.1 65.6 24.7 53.0 | gsam 79.5 85.3 67.3 25.3 53.3
vit_b32   vanilla 71.4 77.5 57.5 23.4 44.0 | sam 73.6 80.3 60.0 24.0 50.7 | gsam 76.8 82.7 63.0 25.1 51.7
vit_b16   vanilla 74.6 79.8 61.3 20.1 46.6 | sam 79.9 85.2 67.5 26.4 56.5 | gsam 81.0 86.5 69.2 27.1 55.7
mixer_s32 vanilla 63.9 70.3 49.5 16.9 35.2 | sam 66.7 73.8 52.4 18.6 39.3 | gsam 68.6 75.8 55.0 22.6 44.6
mixer_s16 vanilla 68.8 75.1 54.8 15.9 35.6 | sam 72.9 79.8 58.9 20.1 42.0 | gsam 75.0 81.7 61.9 23.7 48.5
mixer_s8  vanilla 70.2 76.2 56.1 15.4 34.6 | sam 75.9 82.5 62.3 20.5 42.4 | gsam 76.8 83.4 64.0 24.6 47.8
mixer_b32 vanilla 62.5 68.1 47.6 14.6 33.8 | sam 72.4 79.0 58.0 22.8 46.2 | gsam 73.6 80.2 59.9 27.9 52.1
mixer_b16 vanilla 66.4 72.1 50.8 14.5 33.8 | sam 77.4 83.5 63.9 24.7 48.8 | gsam 77.8 84.0 64.9 28.3 54.4
"""


# configs/model/ files of the small CPU models: the demo's (scripts/demo.sh) and the small-scale study's; their
# experiments carry the same prefixes, which is how scripts/sweep.py leaves them out of Table 1
SMALL_MODEL_PREFIXES = ("demo_", "study_")


def table1_models(config_dir: Path = CONFIGS) -> list[str]:
    """The models of Table 1: every ``configs/model/*.yaml`` but the small CPU ones (the names are the files')."""
    return sorted(p.stem for p in Path(config_dir, "model").glob("*.yaml")
                  if not p.stem.startswith(SMALL_MODEL_PREFIXES))


def sam_name(method: str) -> str:
    """The ``sam`` config group that trains a Table 1 ``method`` (vanilla -> none)."""
    return _SAM_NAMES.get(method, method)


def table1_method(sam: str) -> str:
    """The Table 1 method a run of ``sam.name`` is (none -> vanilla), as results.json records it."""
    return {v: k for k, v in _SAM_NAMES.items()}.get(sam, sam)


def paper_table1() -> dict[tuple[str, str], dict[str, float]]:
    """{(model, method): {column: top-1 %}}."""
    table = {}
    for line in _TABLE1.strip().splitlines():
        model, rest = line.split(maxsplit=1)
        for cell in rest.split("|"):
            method, *values = cell.split()
            table[model, method] = dict(zip(PAPER_COLUMNS, map(float, values)))
    return table


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


def rows(runs: list[dict]) -> list[dict]:
    """One row per (model, method) in the paper's order (other models after), ours beside the paper's."""
    paper = paper_table1()
    ours = {(r["model"], r["method"]): r for r in runs}
    order = [(m, k) for m in dict.fromkeys(m for m, _ in paper) for k in TABLE1_METHODS]
    rank = {m: i for i, m in enumerate(TABLE1_METHODS)}
    keys = [k for k in order if k in ours] + sorted((k for k in ours if k not in order),
                                                    key=lambda k: (k[0], rank.get(k[1], len(rank)), k[1]))
    out = []
    for key in keys:
        ref = paper.get(key, {})
        row = {"model": key[0], "method": key[1], "name": ours[key].get("name", "")}
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
# read gives; our SAM rows run a constant rho of our choice (configs/method/sam.yaml): not like for like
SAM_NOTE = ("† SAM: the paper's number is Chen et al. (2021)'s (Table 1 copies it), trained with their own "
            "per-model ρ; ours runs a constant ρ of our choice (the row's GSAM ρ_max for ViTs and Mixers, 0.05 for "
            "ResNets; configs/method/sam.yaml). The difference is not ours against the paper's recipe "
            "(docs/recipe.md, \"The comparison\"; scripts/sweep.py search=sam_rho runs App. B.1's ρ search).")


def markdown(table: list[dict]) -> str:
    head = "| Model | Training | " + " | ".join(HEADERS[c] for c in COLUMNS) + " |"
    lines = [head, "|---|---|" + "---|" * len(COLUMNS)]
    for r in table:
        cells = [f"{_fmt(r[c]['ours'])} / {_fmt(r[c]['paper'])} ({_fmt(r[c]['diff'], True)})" for c in COLUMNS]
        method = f"{r['method']} †" if r["method"] == "sam" else r["method"]
        lines.append(f"| {r['model']} | {method} | " + " | ".join(cells) + " |")
    notes = ["Each cell: ours / paper (ours − paper), top-1 %; — where there is no number. R: the argmax over all "
             "the model's classes (1000), as Table 1's R most likely is (docs/data.md); R masked: over the R set's "
             "classes only (ImageNet-R's 200), which the paper does not report."]
    notes += [SAM_NOTE] if any(r["method"] == "sam" for r in table) else []
    return "\n".join(lines) + "\n\n" + "\n\n".join(notes) + "\n"


def to_csv(table: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["model", "method", "name", "column", "ours", "paper", "diff"])
    for r in table:
        for c in COLUMNS:
            w.writerow([r["model"], r["method"], r["name"], c, *("" if r[c][k] is None else f"{r[c][k]:.4f}"
                                                                 for k in ("ours", "paper", "diff"))])
    return buf.getvalue()
