"""A failed process ends, at once and entirely: no hang on an error, no process left behind, no rank waiting.

Why it is needed: DataLoader workers ignore SIGTERM, SIGINT, USR1 and USR2 (``data.folder.ignore_stop_signals``:
Slurm signals the whole process group, and only the main process may act on it). At interpreter exit Python's
multiprocessing stops its children with SIGTERM and then joins them, for ever. FFCV's loader threads die silently
and leave the main thread waiting on their queue. And under torchrun a rank that fails leaves the others inside a
collective until NCCL's timeout (tens of minutes holding the GPUs).

So the main process stops its workers itself (SIGKILL, then reaps them) whenever a run ends (``stop_workers``);
an uncaught exception in any thread ends the process (``guarded``); and the ranks watch each other through the
rendezvous store (``RankWatch``): the one that fails says so there, the others see it within a second and exit
instead of waiting, and every rank exits when torchrun itself is gone.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback

FAILED_KEY = "gsam/failed"  # set in the rendezvous store by the rank that fails
POLL_S = 1.0
GRACE_S = 3.0
EXIT_FAILED = 1


def stop_workers() -> None:
    """SIGKILL every child process started through multiprocessing (the DataLoader workers) and reap them.
    SIGCHLD goes back to its default first: torch's handler would turn the workers' deaths into an error raised
    in the middle of the exit. Only for a process that is ending: the loaders cannot be used afterwards."""
    children = multiprocessing.active_children()
    if not children:
        return
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    for p in children:
        p.kill()
    for p in children:
        p.join(timeout=5)


def hard_exit(code: int) -> None:
    """Flush the outputs, stop the workers and end the process now: no atexit handler may wait on anything."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    stop_workers()
    os._exit(code)


def _thread_failed(args: threading.ExceptHookArgs) -> None:
    """An uncaught exception in a thread (FFCV's loader threads raise there): print it and end the process,
    because the main thread may be waiting for that thread's output."""
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "a thread"
    print(f"[gsam] uncaught error in thread {name}; stopping the run:", file=sys.stderr)
    traceback.print_exception(args.exc_type, args.exc_value, args.exc_traceback, file=sys.stderr)
    RankWatch.announce(f"thread {name}: {args.exc_type.__name__}: {args.exc_value}")
    hard_exit(EXIT_FAILED)


@contextlib.contextmanager
def guarded():
    """Around a run (training or evaluate.py's scoring): an uncaught exception in another thread ends the
    process (``_thread_failed``); whatever ends the run early tells the other ranks and stops the workers
    (``failed``). The previous thread hook is back afterwards (an application that embeds a run keeps its own)."""
    previous = threading.excepthook
    threading.excepthook = _thread_failed
    try:
        yield
    except BaseException as e:
        failed(e)
        raise
    finally:
        threading.excepthook = previous
        RankWatch.stop()


class RankWatch:
    """A daemon thread per rank of a process group: exits the process when another rank announced a failure in
    the rendezvous store, or when torchrun (the parent) is gone. ``announce`` is the failing rank's side. Its own
    store client (MASTER_ADDR:MASTER_PORT), so that it never shares a connection with the process group."""

    _store = None
    _rank = 0
    _done = threading.Event()

    @classmethod
    def start(cls, rank: int) -> None:
        import torch.distributed as dist
        from datetime import timedelta

        try:
            store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                                  timeout=timedelta(seconds=30))
        except (KeyError, ValueError, RuntimeError) as e:  # no env:// rendezvous: torchrun's timeout still ends it
            print(f"[gsam] rank {rank}: no rank watch ({type(e).__name__}: {e})", file=sys.stderr)
            store = None
        cls._store, cls._rank = store, rank
        cls._done.clear()
        parent = os.getppid() if "TORCHELASTIC_RUN_ID" in os.environ else None  # a plain run may outlive its shell
        threading.Thread(target=cls._watch, args=(store, parent), daemon=True, name="gsam-rank-watch").start()

    @classmethod
    def stop(cls) -> None:
        """The run is over on this rank: a rank that ends first is no failure."""
        cls._done.set()

    @staticmethod
    def _key() -> str:  # one per torchrun attempt: a restarted group must not read the last attempt's failure
        return f"{FAILED_KEY}/{os.environ.get('TORCHELASTIC_RUN_ID', '')}/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"

    @classmethod
    def _watch(cls, store, parent: int | None) -> None:
        while not cls._done.wait(POLL_S):
            if parent is not None and os.getppid() != parent:
                print(f"[gsam] rank {cls._rank}: torchrun (pid {parent}) is gone; exiting", file=sys.stderr)
                hard_exit(EXIT_FAILED)
            try:
                what = store.get(cls._key()).decode() if store is not None and store.check([cls._key()]) else None
            except Exception:  # the store's host process ended (rank 0 under srun): torchrun/Slurm end the rest
                return
            if what is not None:
                # a grace period: an error raised on every rank at once ends each with its own line and status
                if cls._done.wait(GRACE_S):
                    return
                print(f"[gsam] rank {cls._rank}: stopping, {what} failed", file=sys.stderr)
                hard_exit(EXIT_FAILED)

    @classmethod
    def announce(cls, what: str) -> None:
        """Tell the other ranks that this one fails (a no-op outside a process group)."""
        if cls._store is None:
            return
        try:
            cls._store.set(cls._key(), f"rank {cls._rank} ({what})"[:500])
        except Exception:  # the store is gone: torchrun ends the others
            pass


def failed(error: BaseException) -> None:
    """What a run does when ``error`` ends it: tell the other ranks (unless it is an agreed stop, e.g. a
    preemption that every rank takes), and stop the workers."""
    if not isinstance(error, SystemExit):
        RankWatch.announce(f"{type(error).__name__}: {error}")
    stop_workers()


def run_main(main) -> None:
    """The scripts' entry point: ``main()`` (Hydra's, which prints a traceback and raises SystemExit on an
    error), then an exit that nothing can hold up when it failed."""
    try:
        main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else EXIT_FAILED)
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
    except KeyboardInterrupt:
        traceback.print_exc()
        code = 130
    except BaseException:
        traceback.print_exc()
        code = EXIT_FAILED
    else:
        code = 0
    if code:
        hard_exit(code)
    stop_workers()
    sys.exit(0)
