"""One run per output folder: an exclusive lock on ``<output_dir>/.lock``, taken before anything is read or
written there, held until the process ends.

The lock (gsam.state.lockfile) is released by the kernel when its holder dies, kill -9 included, and names its
holder for the message of the run that is refused. Under DDP rank 0 holds
it and every rank learns the answer, so that all of them stop together.
"""
from __future__ import annotations

from pathlib import Path

import torch

from gsam.config.checks import ConfigError
from gsam.distributed import raise_on_every_rank
from gsam.state.lockfile import LockHeld, hold_lock


class FolderInUse(ConfigError):
    """Another live process holds the output folder."""


def lock_output_dir(out: Path):
    """The open, locked file (keep it open for the run), or FolderInUse naming the folder and the holder."""
    out.mkdir(parents=True, exist_ok=True)
    try:
        return hold_lock(out / ".lock")
    except LockHeld as e:
        holder = e.holder or "a process that has not written its name yet"
        raise FolderInUse(f"output_dir={out} is in use by another run ({holder}); wait for it to end, or choose "
                          "another output_dir") from None


def lock_for_run(out: Path, main: bool, device: torch.device):
    """Rank 0 takes the lock; every rank raises FolderInUse when it could not (an all-reduce agrees)."""
    held, error = None, None
    if main:
        try:
            held = lock_output_dir(out)
        except FolderInUse as e:
            error = e
    raise_on_every_rank(error, device, FolderInUse(f"output_dir={out} is in use by another run (rank 0 was refused "
                                                   "the lock)"))
    return held
