"""An exclusive lock held by a live process: the output folder's run lock (gsam.state.runlock) and the beton
writer's folder lock (data/write_guard.py).

A POSIX lock (``fcntl.lockf``) and not a pid file: the kernel releases it when its holder dies, kill -9 included, so
a stale lock never blocks a rerun, and it works across the hosts of a shared (NFS) file system. The file says who
holds it (pid and host), for the message of the process that is refused. A holder may remove the file when it ends
(the beton writer does): a file locked after it was removed or replaced is not the lock, so it is opened again.
Torch-free: the beton writer imports it.
"""
from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path


class LockHeld(Exception):
    """Another live process holds the lock; ``holder`` is what it wrote into the file."""

    def __init__(self, holder: str):
        super().__init__(holder)
        self.holder = holder


def hold_lock(path: Path):
    """The open file at ``path``, locked and naming this process (keep it open to hold the lock), or LockHeld."""
    while True:
        f = open(path, "a+")
        try:
            fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip()
            f.close()
            raise LockHeld(holder) from None
        try:
            same = os.path.samestat(os.fstat(f.fileno()), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        f.close()
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()} on host {socket.gethostname()}\n")
    f.flush()
    return f
