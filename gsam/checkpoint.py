"""Checkpoints: atomic writes, automatic resume from the output folder, top-k by an eval metric.

Files in ``<output_dir>/checkpoints``: ``last.pt`` (every N steps and at the end; resume reads it),
``top-<metric>-<value>-step<N>.pt`` (the k best evaluations). Every file is written to a temporary
name in the same folder, flushed, fsynced and renamed, so a crash leaves the previous file intact.
A checkpoint whose weights are not finite is refused, so it never replaces a good one.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch


class CheckpointError(RuntimeError):
    pass


def atomic_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def finite_weights(state_dict: dict) -> bool:
    return all(torch.isfinite(v).all() for v in state_dict.values() if torch.is_tensor(v) and v.is_floating_point())


def load(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated or foreign file: say which and what to do
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(e).__name__}: {e}); "
                              "move it away to start from scratch, or restore a copy") from e


class CheckpointManager:
    def __init__(self, directory: str | Path, keep_top_k: int = 3, metric: str = "top1"):
        self.dir = Path(directory)
        self.keep_top_k, self.metric = keep_top_k, metric

    @property
    def last(self) -> Path:
        return self.dir / "last.pt"

    def save_last(self, state: dict) -> bool:
        if not finite_weights(state["model"]):
            return False
        atomic_save(state, self.last)
        return True

    def resume_state(self) -> dict | None:
        return load(self.last) if self.last.exists() else None

    def _top(self) -> list[tuple[float, Path]]:
        pat = re.compile(rf"top-{re.escape(self.metric)}-([0-9.]+)-step(\d+)\.pt$")
        found = [(float(m.group(1)), p) for p in self.dir.glob("top-*.pt") if (m := pat.search(p.name))]
        return sorted(found, key=lambda t: -t[0])

    def save_top(self, state: dict, value: float, step: int) -> Path | None:
        """Keep ``state`` if ``value`` is among the k best so far; drop the one that falls out."""
        if self.keep_top_k <= 0 or not finite_weights(state["model"]):
            return None
        top = self._top()
        if len(top) >= self.keep_top_k and value <= top[-1][0]:
            return None
        path = self.dir / f"top-{self.metric}-{value:.4f}-step{step}.pt"
        atomic_save(state, path)
        for _, old in self._top()[self.keep_top_k:]:
            old.unlink(missing_ok=True)
        return path
