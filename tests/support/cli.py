"""train.py and evaluate.py as a user runs them: real subprocesses on the embedded demo data, watched through
the files they write (metrics.jsonl, checkpoints)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from support import ROOT

# what every demo run in the tests sets: no worker processes, no progress bar, no wandb, val only
QUIET = ["data.num_workers=0", "train.progress=false", "logger.wandb.mode=disabled", "eval=default",
         "++data.robustness_root=null"]  # ++: data=imagenet has no such key


def command(script: str, out, demo_root, *overrides) -> list[str]:
    return [sys.executable, script, "+experiment=demo_gsam", f"output_dir={out}", f"data.root={demo_root}", *QUIET,
            *overrides]


def run_cli(script: str, out, demo_root, *overrides, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(command(script, out, demo_root, *overrides), cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def start_train(out, demo_root, *overrides) -> subprocess.Popen:
    """train.py in its own process group (as Slurm starts a job step), so a test can signal the whole group."""
    return subprocess.Popen(command("train.py", out, demo_root, *overrides), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def train_steps(out) -> list[int]:
    path = Path(out) / "metrics.jsonl"
    if not path.exists():
        return []
    return [r["step"] for r in map(json.loads, path.read_text().splitlines()) if r["kind"] == "train"]


def wait_for_step(proc: subprocess.Popen, out, step: int, timeout: float = 300) -> None:
    """Until ``out``'s metrics.jsonl has logged training step ``step`` (the process must still be running)."""
    end = time.monotonic() + timeout
    while not any(s >= step for s in train_steps(out)):
        if proc.poll() is not None:
            raise AssertionError(f"train.py ended (exit {proc.returncode}) before step {step}: "
                                 f"{proc.stderr.read()[-2000:]}")
        if time.monotonic() > end:
            raise AssertionError(f"no step {step} in {out} after {timeout} s")
        time.sleep(0.02)


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def torchrun_train(out, demo_root, *overrides, nproc: int = 2, worker=None, timeout=600) -> subprocess.CompletedProcess:
    """train.py on the demo under ``torchrun --standalone`` (gloo on the CPU), one thread per process: each
    process then computes the same thing on every run. ``worker``: [script, args...] run by torchrun instead of
    train.py, which gets the overrides after its own arguments (tests/train_ddp_worker.py runs train.py itself)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    script = worker or ["train.py"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *script,
           *command("train.py", out, demo_root, *overrides)[2:]]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def session_processes(sid: int) -> list[int]:
    """The pids of the live processes of session ``sid`` (a process started with start_new_session=True heads
    its own session; its DataLoader workers and torchrun's ranks belong to it)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended while we looked
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def run_bounded(cmd: list[str], timeout: float, **popen) -> subprocess.CompletedProcess:
    """``cmd`` in its own session, as a user's job; an AssertionError when it is still running after ``timeout``
    seconds (a hang: the whole session is then killed) or when any process of its session outlives it."""
    import signal

    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **popen)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"still running after {timeout} s (hung); stderr: {err[-3000:]}") from None
    end = time.monotonic() + 3  # a process that was killed may take a moment to be gone
    while (left := session_processes(proc.pid)) and time.monotonic() < end:
        time.sleep(0.1)
    for pid in left:
        os.kill(pid, 9)
    assert not left, f"processes left behind after exit {proc.returncode}: {left}; stderr: {err[-3000:]}"
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
