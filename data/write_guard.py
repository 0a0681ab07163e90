"""What keeps a beton write from hanging, orphaning its workers or colliding with another write.

- ``die_with_parent``: a worker process (the writer's, the header and decode scans') is killed by the kernel
  when the process that started it dies, SIGKILL included (Linux's ``PR_SET_PDEATHSIG``): without it a
  ``timeout``, a ``kill`` of the main pid or the OOM killer leaves the workers running under PID 1, each
  holding its images, the ``.tmp`` file and the shared memory. The workers also leave Ctrl-C and SIGTERM to
  the main process, which stops them and removes what it wrote.
- ``process_pool``: a ``ProcessPoolExecutor`` of such workers that, left by an exception (Ctrl-C, SIGTERM), kills
  its processes instead of waiting for every queued task, as the executor's own exit does.
- ``lock_out_folder``: one writer per output folder, an exclusive lock (gsam.state.lockfile: released by the kernel when
  its holder dies, works over NFS) on ``<folder>/.write_betons.lock``; the file is removed when the writer ends.
- ``Stopped`` / ``stop_on_signals``: Ctrl-C, SIGTERM and SIGHUP (``timeout``, Slurm, a closed terminal) raised
  in the main process as an exception, so that the write unwinds: workers stopped, temporary file removed,
  lock released.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

PR_SET_PDEATHSIG = 1  # <sys/prctl.h>
LOCK_NAME = ".write_betons.lock"


class Stopped(KeyboardInterrupt):
    """The main process got SIGINT, SIGTERM or SIGHUP; a KeyboardInterrupt, so that it unwinds as Ctrl-C does."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class FolderInUse(ValueError):
    """Another live writer holds the output folder's lock."""


def die_with_parent(parent: int) -> None:
    """In a worker: SIGKILL when ``parent`` dies (Linux), and Ctrl-C/SIGTERM left to the parent, which stops
    the workers itself. Exits at once when the parent is already gone (it died before the prctl)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (AttributeError, OSError):  # not Linux: the parent's own clean-up is all there is
        return
    if os.getppid() != parent:
        os._exit(1)


@contextlib.contextmanager
def process_pool(workers: int):
    """A ``ProcessPoolExecutor`` whose processes die with this one and are killed when the block raises."""
    pool = ProcessPoolExecutor(max_workers=max(workers, 1), initializer=die_with_parent, initargs=(os.getpid(),))
    try:
        yield pool
    except BaseException:
        processes = list((pool._processes or {}).values())  # the executor has no public handle on them
        pool.shutdown(wait=False, cancel_futures=True)
        for p in processes:
            p.kill()
        for p in processes:
            p.join(timeout=5)
        raise
    pool.shutdown(wait=True)


_received: list[int] = []  # the signals stop_on_signals' handler got, in order


def _raise_stopped(signum, _frame):
    _received.append(signum)
    for s in STOP_SIGNALS:  # the clean-up that follows is short: a second signal waits for it
        signal.signal(s, signal.SIG_IGN)
    raise Stopped(signum)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def stop_signal() -> int | None:
    """The first signal received inside ``stop_on_signals``, or None."""
    return _received[0] if _received else None


def raise_if_stopped() -> None:
    """Raise ``Stopped`` again if a signal came: Python drops an exception raised where it cannot propagate (a
    Ctrl-C during ``fork``'s at-fork handlers was lost so, and the write went on), so the polling loops ask."""
    if _received:
        raise Stopped(_received[0])


@contextlib.contextmanager
def stop_on_signals():
    """Within the block, SIGINT, SIGTERM and SIGHUP raise ``Stopped`` in the main thread (once: later ones are
    ignored during the clean-up) and are recorded (``stop_signal``); the previous handlers are back afterwards."""
    previous = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    _received.clear()
    for s in previous:
        signal.signal(s, _raise_stopped)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def lock_out_folder(folder: Path, what: str = "--out"):
    """Hold ``folder``'s writer lock for the block; FolderInUse (one line naming the folder and the holder) when
    another live process holds it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    f = _locked(path, what)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # removed while still locked: a writer waiting on the old file sees it is gone
        f.close()


def _locked(path: Path, what: str):
    """The open, locked lock file, or FolderInUse naming the folder and the writer that holds it."""
    from gsam.state.lockfile import LockHeld, hold_lock

    try:
        return hold_lock(path)
    except LockHeld as e:
        holder = e.holder or "a writer that has not written its name yet"
        raise FolderInUse(f"{what} {path.parent}: another beton writer is writing there ({holder}); wait "
                          "for it to end, or choose another folder") from None


def remove_partial_files(folder: Path, splits=("train", "minival", "val")) -> list[Path]:
    """The temporary files a killed writer left (``<split>.beton.tmp``, ``<split>.json.tmp``); under the lock."""
    removed = []
    for split in splits:
        for path in (Path(folder) / f"{split}.beton.tmp", Path(folder) / f"{split}.json.tmp"):
            if path.is_file():
                path.unlink()
                removed.append(path)
    return removed
