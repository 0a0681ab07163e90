"""One run per output folder: an exclusive lock on ``<output_dir>/.lock``, taken before anything is read or
written there, held until the process ends.

A POSIX lock (``fcntl.lockf``) and not a pid file: the kernel releases it when the process dies, kill -9
included, so a stale lock never blocks a rerun; and it works across the hosts of a shared (NFS) file system.
The file says who holds it (pid and host), for the message of the run that is refused. Under DDP rank 0 holds
it and every rank learns the answer, so that all of them stop together.
"""
from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

import torch

from gsam.config.checks import ConfigError
from gsam.distributed import raise_on_every_rank


class FolderInUse(ConfigError):
    """Another live process holds the output folder."""


def lock_output_dir(out: Path):
    """The open, locked file (keep it open for the run), or FolderInUse naming the folder and the holder."""
    out.mkdir(parents=True, exist_ok=True)
    f = open(out / ".lock", "a+")
    try:
        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip() or "a process that has not written its name yet"
        f.close()
        raise FolderInUse(f"output_dir={out} is in use by another run ({holder}); wait for it to end, or choose "
                          "another output_dir") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on host {socket.gethostname()}\n")
    f.flush()
    return f


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
