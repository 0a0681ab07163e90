"""Checkpoints: atomic writes, automatic resume from the output folder, top-k by an eval metric.

Files in ``<output_dir>/checkpoints``: ``last.pt`` (every N steps and at the end; resume reads it),
``top-<metric>-<value>-step<N>.pt`` (the k best evaluations). Every file is written to a temporary
name in the same folder, flushed, fsynced and renamed, so a crash leaves the previous file intact.
A checkpoint whose weights are not finite is refused, so it never replaces a good one.

Loading never runs code: a checkpoint holds only tensors and plain containers (the RNG states as tensors
and lists, the optimizer state, the config as a dict) and is read with ``torch.load(weights_only=True)``,
so a crafted ``last.pt`` or ``eval.checkpoint=`` file is refused instead of executed.
"""
from __future__ import annotations

import os
import pickle
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


REQUIRED_KEYS = ("model", "loop", "config")  # what every checkpoint the trainer writes has


def load(path: Path) -> dict:
    """A gsam checkpoint, read without running any code it may carry; CheckpointError (one line, naming the
    file) for anything else."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # weights_only refused an object: never unpickle it
        raise CheckpointError(f"checkpoint {path} refused: it holds objects other than tensors and plain "
                              "containers (not written by this gsam, or crafted); nothing in it was run") from e
    except Exception as e:  # truncated or foreign file: say which and what to do
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(e).__name__}: {first}); "
                              "move it away to start from scratch, or restore a copy") from e
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED_KEYS):
        found = sorted(state)[:6] if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{path} is not a gsam checkpoint (expected the entries {list(REQUIRED_KEYS)}, "
                              f"found {found})")
    return state


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
