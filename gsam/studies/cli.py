"""The analysis scripts' command line and what they write: the common options, the run folder,
``<out>/<name>.json`` and ``<out>/<name>.png`` (matplotlib with the Agg backend: no display needed)."""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import platform
import sys
import time
from pathlib import Path

import torch

from gsam.runlog import json_safe


def parser(doc: str, name: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=f"outputs/analysis/{name}", help="run folder for the PNG and the JSON")
    p.add_argument("--demo-root", default="outputs/demo_data", help="the embedded demo data (written if missing)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: small models gain nothing from more)")
    return p


@contextlib.contextmanager
def torch_threads(n: int):
    """torch's intra-op thread count at ``n`` inside the block, the caller's after it: a script's main() may be
    called inside another process (the tests call it in pytest's), whose thread count must not depend on it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def keeps_threads(main):
    """A script's main(), which sets its own thread count through ``start`` (from --threads), gives the caller's
    back when it returns or raises."""
    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        with torch_threads(torch.get_num_threads()):
            return main(*args, **kwargs)

    return wrapped


def start(args: argparse.Namespace) -> Path:
    """The run folder, made; torch's thread count from --threads (main() is wrapped in ``keeps_threads``)."""
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def save_json(out: Path, name: str, data: dict, started: float) -> Path:
    """The numbers, with the exact command and the time it took."""
    path = out / f"{name}.json"
    meta = {"command": " ".join(sys.argv), "seconds": round(time.time() - started, 1), "torch": torch.__version__,
            "python": platform.python_version()}
    path.write_text(json.dumps({"meta": meta, **json_safe(data)}, indent=1))
    return path


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
