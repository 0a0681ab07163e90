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

import contextlib
import errno
import os
import pickle
import re
from pathlib import Path

import torch

from gsam.distributed import raise_on_every_rank


class CheckpointError(RuntimeError):
    pass


TMP_PATTERN = ".*.tmp*"  # atomic_save's temporary names (a kill -9 mid-write leaves one behind)


def _nbytes(obj) -> int:
    """The tensor bytes in ``obj``: about what its file needs on disk."""
    if torch.is_tensor(obj):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v) for v in obj)
    return 0


def atomic_save(obj, path: Path) -> None:
    """Write to a temporary name, fsync, rename. On failure (disk full, quota) the temporary file is removed,
    the previous ``path`` is untouched, and the error is one line naming the folder and the space needed."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch.save reports a failed write as RuntimeError
        with contextlib.suppress(OSError):  # a read-only folder refuses even the removal of a file never made
            tmp.unlink(missing_ok=True)
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        kept = "the previous one is kept" if path.exists() else "there is no previous one"
        if getattr(e, "errno", None) in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise CheckpointError(f"cannot write {path.name} in {path.parent} ({reason}); {kept}. Make the folder "
                                  "writable (or choose another output_dir) and rerun the same command to resume") from e
        raise CheckpointError(f"cannot write {path.name} in {path.parent} ({reason}): it needs about "
                              f"{_nbytes(obj) / 2**20:.0f} MiB free; {kept}. Free space there and rerun the same "
                              "command to resume") from e


def finite_weights(state_dict) -> bool:
    """Every floating-point tensor in ``state_dict`` (a model's, or an optimizer's nested state) is finite."""
    if torch.is_tensor(state_dict):
        return not state_dict.is_floating_point() or bool(torch.isfinite(state_dict).all())
    if isinstance(state_dict, dict):
        return all(finite_weights(v) for v in state_dict.values())
    if isinstance(state_dict, (list, tuple)):
        return all(finite_weights(v) for v in state_dict)
    return True


def load_weights(model, weights: dict, path) -> None:
    """``model.load_state_dict``; a checkpoint of another architecture or head is one line naming the file and
    the first mismatch, not torch's page of size mismatches."""
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        lines = [line.strip() for line in str(e).splitlines()[1:] if line.strip()] or [str(e).strip()]
        more = f" and {len(lines) - 1} more" if len(lines) > 1 else ""
        raise CheckpointError(f"checkpoint {path} does not fit this model ({lines[0]}{more}); it was written for "
                              "another model or data.num_classes") from None


REQUIRED_KEYS = ("model", "loop", "config")  # what every checkpoint the trainer writes has
LOOP_KEYS = ("step", "epoch", "batch_in_epoch")


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
    loop = state["loop"]
    bad = [k for k in LOOP_KEYS if not (isinstance(loop, dict) and isinstance(loop.get(k), int))]
    if bad:  # a loop without its step would restart the schedule at step 0 with trained weights
        raise CheckpointError(f"checkpoint {path}: its loop position has no integer {', '.join(bad)}; it is damaged "
                              "or not written by this trainer (an earlier checkpoints/step-N.pt may be whole)")
    if not finite_weights(state.get("optimizer")):
        raise CheckpointError(f"checkpoint {path}: its optimizer state is not finite (NaN or inf), a resumed run "
                              "would train on it; copy an earlier checkpoints/step-N.pt over it, or move it away")
    return state


class CheckpointManager:
    """``keep_previous``: besides ``last.pt``, the N checkpoints before it stay as ``step-<N>.pt`` (the newest
    ``step-`` file is ``last.pt`` itself, a hard link), so a run that went wrong while its weights stayed finite
    can be stepped back: copy a ``step-`` file over ``last.pt`` and rerun."""

    def __init__(self, directory: str | Path, keep_top_k: int = 3, metric: str = "top1", keep_previous: int = 0):
        self.dir = Path(directory)
        self.keep_top_k, self.metric, self.keep_previous = keep_top_k, metric, keep_previous

    @property
    def last(self) -> Path:
        return self.dir / "last.pt"

    def save_last(self, state: dict) -> bool:
        if not (finite_weights(state["model"]) and finite_weights(state["optimizer"])):
            return False
        if self.keep_previous <= 0:
            atomic_save(state, self.last)
            return True
        step_file = self.dir / f"step-{state['loop']['step']:08d}.pt"
        atomic_save(state, step_file)
        link = self.dir / f".last.pt.tmp{os.getpid()}"
        link.unlink(missing_ok=True)
        os.link(step_file, link)  # last.pt replaced in one rename: never absent, never half written
        os.replace(link, self.last)
        for old in self.history()[self.keep_previous + 1:]:
            old.unlink()
        return True

    def history(self) -> list[Path]:
        """The ``step-`` checkpoints, newest first."""
        return sorted(self.dir.glob("step-*.pt"), reverse=True)

    def describe(self) -> str:
        """Where the good checkpoints are, for a message that stops the run."""
        if not self.last.exists():
            return "no checkpoint was written"
        earlier = [p.name for p in self.history()[1:]]
        return f"{self.last} holds step {load(self.last)['loop']['step']}" + (
            f"; earlier: {', '.join(earlier)} (copy one over last.pt to go back)" if earlier else "")

    def remove_partial_files(self) -> list[Path]:
        """Temporary files of writes that never finished (a kill -9 mid-write); only while this run holds
        the output folder's lock, so that no other run's write is in progress."""
        stale = list(self.dir.glob(TMP_PATTERN)) if self.dir.is_dir() else []
        for p in stale:
            p.unlink(missing_ok=True)
        return stale

    def resume_state(self) -> dict | None:
        """``last.pt``; the ``step-`` files after its step (a future the user stepped back from) are removed,
        so that the history that follows is this run's."""
        if not self.last.exists():
            return None
        state = load(self.last)
        if "released" in state:  # scripts/convert_released.py writes weights alone: nothing of a run to resume
            raise CheckpointError(f"{self.last} holds a released model's weights ({state['released']['file']}) without "
                                  "optimizer state; train.py cannot resume it: evaluate it with evaluate.py "
                                  "eval.checkpoint=<file>, and train in another output_dir")
        for p in self.history():
            if int(p.stem.split("-")[1]) > state["loop"]["step"]:
                p.unlink()
        return state

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


def write_on_rank0(write, info) -> None:
    """Rank 0 runs ``write``; if that fails (disk full) every rank stops with its one-line error instead of
    waiting for rank 0 at the next collective."""
    error = None
    if info.main:
        try:
            write()
        except CheckpointError as e:
            error = e
    raise_on_every_rank(error, info.device, CheckpointError("rank 0 could not write the checkpoint"))
