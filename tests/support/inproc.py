"""train.py and evaluate.py's ``main()`` called inside the test process, as their command line would: for the
tests whose claim is what the script prints and its exit status (the one-line exit-2 errors), where a new
interpreter would only add its 5 s of imports. A test whose point is the process itself (kill -9, signals,
locks, rlimits, torchrun, hangs, Slurm) keeps ``support.cli``'s subprocesses.

``run_main`` returns what ``subprocess.run(..., capture_output=True, text=True)`` would: the exit status as
``gsam.failsafe.run_main`` sets it (SystemExit's code; 1 for an uncaught exception, whose traceback goes to
stderr; 0 when ``main`` returns), and everything written to stdout and stderr.
"""
from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import traceback
import warnings
from functools import cache

import torch

from support import ROOT
from support.cli import command


@cache
def _script(name: str):
    """train.py / evaluate.py as modules, loaded once by path (they are scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"script_{name.removesuffix('.py')}", ROOT / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # Hydra finds configs/ beside the calling file when the task function's module is __main__ (a script), and
    # as a package otherwise: here it is the script
    module.main.__wrapped__.__module__ = "__main__"
    return module


@contextlib.contextmanager
def _as_a_fresh_process(argv: list[str]):
    """What a run may change in the process and a new interpreter would not carry over: the argv Hydra parses,
    the working directory, torch's thread count, the thread hook, the signal handlers and the warning filters
    (with their record of warnings already shown); all put back."""
    import signal
    import threading

    saved = (sys.argv, os.getcwd(), torch.get_num_threads(), threading.excepthook)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2,
                                                  signal.SIGHUP)}
    sys.argv = argv
    try:
        with warnings.catch_warnings():  # a new interpreter's filters, and every warning shown again
            warnings.resetwarnings()
            for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                warnings.simplefilter("ignore", category)
            yield
    finally:
        sys.argv, cwd, threads, threading.excepthook = saved
        os.chdir(cwd)
        torch.set_num_threads(threads)
        for s, h in handlers.items():
            signal.signal(s, h)


def run_main(script: str, out, demo_root, *overrides) -> subprocess.CompletedProcess:
    """``script``'s main() on ``+experiment=demo_gsam`` writing into ``out`` (support.cli.command's arguments,
    QUIET included), in this process: its exit status, stdout and stderr."""
    argv = [str(ROOT / script), *command(script, out, demo_root, *overrides)[2:]]
    return run_argv(script, argv)


def run_argv(script: str, argv: list[str]) -> subprocess.CompletedProcess:
    """``script``'s main() with exactly ``argv`` (argv[0] the script's path)."""
    main = _script(script).main
    stdout, stderr = io.StringIO(), io.StringIO()
    with _as_a_fresh_process(argv), contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if isinstance(e.code, str):
                print(e.code, file=sys.stderr)
        except BaseException:  # noqa: BLE001 - what run_main does: the traceback, exit status 1
            traceback.print_exc()
            code = 1
    return subprocess.CompletedProcess(argv, code, stdout.getvalue(), stderr.getvalue())
