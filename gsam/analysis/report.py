"""What the analysis scripts share: the run folder, ``<out>/<name>.json`` and ``<out>/<name>.png``
(matplotlib with the Agg backend: no display needed), and the common command-line options."""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch


def parser(doc: str, name: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=f"outputs/analysis/{name}", help="run folder for the PNG and the JSON")
    p.add_argument("--demo-root", default="outputs/demo_data", help="the embedded demo data (written if missing)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: small models gain nothing from more)")
    return p


def start(args: argparse.Namespace) -> Path:
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def save_json(out: Path, name: str, data: dict, started: float) -> Path:
    """The numbers, with the exact command and the time it took."""
    path = out / f"{name}.json"
    meta = {"command": " ".join(sys.argv), "seconds": round(time.time() - started, 1), "torch": torch.__version__,
            "python": platform.python_version()}
    path.write_text(json.dumps({"meta": meta, **_clean(data)}, indent=1))
    return path


def rank_correlation(a, b) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN for fewer than 2 points."""
    import numpy as np

    def ranks(x):
        x = np.asarray(x, dtype=float)
        order = x.argsort(kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x), dtype=float)
        for v in np.unique(x):  # ties share their mean rank
            r[x == v] = r[x == v].mean()
        return r

    if len(a) < 2:
        return float("nan")
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, out: Path, name: str, dpi: int = 90) -> Path:
    path = out / f"{name}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return path
