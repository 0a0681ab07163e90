"""train.py and evaluate.py as a user runs them: real subprocesses on the embedded demo data, watched through
the files they write (metrics.jsonl, checkpoints)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from gsam.runlog import read_metrics, read_records
from support import ROOT

# what every demo run in the tests sets: no worker processes, no progress bar, no wandb, val only
QUIET = ["data.num_workers=0", "train.progress=false", "logger.wandb.mode=disabled", "eval=default",
         "++data.robustness_root=null"]  # ++: data=imagenet has no such key


def command(script: str, out, demo_root, *overrides) -> list[str]:
    return [sys.executable, script, "+experiment=demo_gsam", f"output_dir={out}", f"data.root={demo_root}", *QUIET,
            *overrides]


def train_beside(out, demo_root, *overrides, timeout: float = 600):
    """train.py on ``out`` (``command``'s arguments), started now in a process of its own, so that it trains while
    the test process trains another run (one thread each: on 2 cores the two overlap instead of queueing). Returns
    a function that waits for it; an AssertionError with the tail of its output (``<out>.log``) when it failed."""
    log = Path(f"{out}.log")
    with open(log, "w") as f:  # a file: a pipe nobody reads while the test trains could fill and block the run
        proc = subprocess.Popen(command("train.py", out, demo_root, *overrides), cwd=ROOT, stdout=f,
                                stderr=subprocess.STDOUT)

    def wait() -> None:
        try:
            proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, f"train.py on {out}: exit {proc.returncode}\n" + log.read_text()[-3000:]

    return wait


def run_script(script: str, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """``script`` (a path in the repository) with ``args``, as the user's own command from the repository with this
    interpreter; an AssertionError with the tail of its output when it fails."""
    done = subprocess.run([sys.executable, str(ROOT / script), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


def results_stamps(folder) -> dict:
    """{results.json: its mtime_ns} of every run of a study's ``folder`` (<stage>/<run>/results.json): the same
    before and after a command means the command trained none of them again."""
    return {p: p.stat().st_mtime_ns for p in Path(folder).glob("*/*/results.json")}


def run_cli(script: str, out, demo_root, *overrides, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run(command(script, out, demo_root, *overrides), cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def start_train(out, demo_root, *overrides) -> subprocess.Popen:
    """train.py in its own process group (as Slurm starts a job step), so a test can signal the whole group."""
    return subprocess.Popen(command("train.py", out, demo_root, *overrides), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def records(out, kind: str = "train") -> list[dict]:
    """``out``'s ``kind`` records in logged order, a step logged twice listed twice (gsam.runlog.read_records):
    what the tests that a step is recorded once must see. [] while metrics.jsonl does not exist yet."""
    if not (Path(out) / "metrics.jsonl").exists():
        return []
    return [r for r in read_records(out) if r["kind"] == kind]


def train_steps(out) -> list[int]:
    return [r["step"] for r in records(out)]


def train_losses(out) -> dict[int, float]:
    """{step: training loss} of a run as gsam.runlog.read_metrics reads it (a replayed step: its last record)."""
    return {r["step"]: r["loss"] for r in read_metrics(out).get("train", [])}


def wait_until(condition, what: str, timeout: float = 300, proc: subprocess.Popen | None = None,
               interval: float = 0.05):
    """Poll ``condition()`` until it returns something true and return that; an AssertionError when ``proc``
    ends first (with its stderr when piped) or after ``timeout`` s. The timeout is generous: a slow machine
    only waits longer."""
    end = time.monotonic() + timeout
    while not (found := condition()):
        if proc is not None and proc.poll() is not None:
            err = proc.stderr.read()[-2000:] if proc.stderr is not None else ""
            raise AssertionError(f"the process ended (exit {proc.returncode}) before {what}: {err}")
        if time.monotonic() > end:
            raise AssertionError(f"no {what} after {timeout} s")
        time.sleep(interval)
    return found


def wait_for_step(proc: subprocess.Popen, out, step: int, timeout: float = 300) -> None:
    """Until ``out``'s metrics.jsonl has logged training step ``step`` (the process must still be running)."""
    wait_until(lambda: any(s >= step for s in train_steps(out)), f"step {step} in {out}", timeout, proc)


def torchrun_train(out, demo_root, *overrides, nproc: int = 2, worker=None, timeout=600) -> subprocess.CompletedProcess:
    """train.py on the demo under ``torchrun --standalone`` (gloo on the CPU), one thread per process: each
    process then computes the same thing on every run. ``worker``: [script, args...] run by torchrun instead of
    train.py, which gets the overrides after its own arguments (tests/train_ddp_worker.py runs train.py itself)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    script = worker or ["train.py"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *script,
           *command("train.py", out, demo_root, *overrides)[2:]]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def tagged_processes(tag: str) -> list[int]:
    """The pids of the live processes whose environment holds ``GSAM_TEST_TAG=<tag>``: every descendant of a
    command started by ``run_bounded``, including torchrun's ranks (torchrun starts each in a session of its
    own) and processes orphaned when their parent died."""
    marker = f"GSAM_TEST_TAG={tag}".encode()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker in environ.read_bytes().split(b"\0") and (environ.parent / "stat").read_text().rsplit(
                    ")", 1)[1].split()[0] != "Z":
                found.append(int(environ.parent.name))
        except (OSError, IndexError):
            continue  # ended while we looked, or not ours to read
    return found


def run_bounded(cmd: list[str], timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    """``cmd`` as a user's job; an AssertionError when it is still running after ``timeout`` seconds (a hang:
    every process it started is then killed) or when any process it started outlives it."""
    import uuid

    tag = uuid.uuid4().hex
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**(env or os.environ), "GSAM_TEST_TAG": tag})
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for pid in [proc.pid, *tagged_processes(tag)]:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass
        out, err = proc.communicate()
        raise AssertionError(f"still running after {timeout} s (hung); stderr: {err[-3000:]}") from None
    end = time.monotonic() + 3  # a process that was killed may take a moment to be gone
    while (left := tagged_processes(tag)) and time.monotonic() < end:
        time.sleep(0.1)
    for pid in left:
        os.kill(pid, 9)
    assert not left, f"processes left behind after exit {proc.returncode}: {left}; stderr: {err[-3000:]}"
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
