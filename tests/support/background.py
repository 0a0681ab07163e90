"""Slow, self-contained programs started when the test session starts, on the core the serial suite leaves idle.

The suite runs one test at a time in one process with one torch thread: on a 2-core machine the other core idles
whenever no test has a process of its own running. A few slow fixtures are whole programs as a user runs them (the
GPU kit's rehearsal, the Slurm cluster and its runs, the tiny studies and frontier, demo.sh, write_betons.py on the
awkward tree, torchrun's ddp_ranks), with nothing of the test process in them: they start here, one after another in
one background thread, as soon as the session starts, and the fixture waits for its program's result when its tests
come. What the tests assert is unchanged; a
job whose tests are not selected (``-k``, ``-m "not slow"``, one file) is not started, and a fixture whose job did not
start runs it itself, in the foreground.

A job runs in a thread that only starts processes and waits for them (it must not train or compute anything in the
test process: that would take the interpreter lock from the tests), and it gets a fresh folder made for it before
the thread starts. Register one with ``@job("<fixture name>")`` in the test module that reads it; the session
fixture ``background`` (tests/conftest.py) starts the jobs of the selected tests in the order of their first test.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

# fixture name -> (the job: f(folder, demo_root, lane) -> result, whether it needs the demo data), in registration
# order (tests/conftest.py's first): a job that reads another's result is registered after it
JOBS: dict[str, tuple[Callable[[Path, "str | None", "Lane"], Any], bool]] = {}


def job(fixture: str, *, demo: bool = False):
    """Registers ``f(folder, demo_root, lane)`` as the background job behind ``fixture`` (demo_root is None unless
    ``demo``; ``lane.result(name)`` gives an earlier job's result)."""
    def register(f):
        JOBS[fixture] = (f, demo)
        return f
    return register


class Lane:
    """One background thread running the session's jobs in the order they were started."""

    def __init__(self, make_folder: Callable[[str], Path], demo_root: Callable[[], str], items: list):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="background-job")
        self._futures: dict[str, Future] = {}
        self._make_folder, self._demo_root = make_folder, demo_root
        self.items = items  # the session's selected tests: a job may do only what they read
        self._lock = threading.Lock()
        self._cleanups: list[Callable[[], None]] = []
        self.seconds: dict[str, float] = {}  # each finished job's wall time, for the session's time report

    def _args(self, name: str) -> tuple:
        """Made in the test process's thread: tmp_path_factory and fixtures are not for other threads."""
        return self._make_folder(name), self._demo_root() if JOBS[name][1] else None, self

    def _timed(self, name: str, *args):
        t0 = time.monotonic()
        try:
            return JOBS[name][0](*args)
        finally:
            self.seconds[name] = time.monotonic() - t0

    def start(self, name: str) -> None:
        with self._lock:
            if name not in self._futures:
                self._futures[name] = self._pool.submit(self._timed, name, *self._args(name))

    def result(self, name: str):
        """The job's result: waited for when it was started, run here and now when it was not; its exception
        (a failed assertion, pytest.skip) raised here, in the fixture that asked."""
        with self._lock:
            future = self._futures.get(name)
        if future is None:
            return self._timed(name, *self._args(name))
        return future.result()

    def on_close(self, cleanup: Callable[[], None]) -> None:
        """``cleanup()`` at the session's end, for what a job leaves running for its tests (a cluster): the fixture
        that normally ends it may never run. It must do nothing when called again."""
        self._cleanups.append(cleanup)

    def close(self) -> None:
        """At the session's end: jobs not yet begun are dropped, a running one is waited for (each bounds its own
        processes with a timeout), then the cleanups run."""
        for future in self._futures.values():
            future.cancel()
        self._pool.shutdown(wait=True)
        for cleanup in reversed(self._cleanups):
            cleanup()
