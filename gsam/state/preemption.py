"""Preemption and time limits: a signal asks the run to stop at the next step boundary; there every rank
agrees, ``last.pt`` is written, and a Slurm job requeues itself, so the requeued job resumes from that step
(same output dir, same wandb run id, both read back from the checkpoint).

Why a flag and not work in the handler: Python runs a handler between two bytecodes of the main thread,
i.e. in the middle of a training step (between the two SAM passes, inside an all-reduce), where the weights
are perturbed and the ranks are not in step. The handler only records the signal; the loop asks
``should_stop()`` after each step, and under DDP the answer is reduced over the ranks, so all of them stop
after the same step even when the signal reached them at different times.

Which signals: Slurm's warning signal (``sbatch --signal=USR2@180``; submitit, and so the Hydra launcher,
uses USR2) and SIGTERM (preemption, ``scancel --signal=TERM``). The handlers replace submitit's while the
loop runs (submitit's would requeue at once, mid-step) and are restored afterwards.

Ctrl-C (INT, in the default list): the first stops at the next step boundary with a checkpoint, as the others
do; a second one aborts at once (KeyboardInterrupt). DataLoader workers ignore all of these
(``data.folder.ignore_stop_signals``): a signal to the process group must reach the main process only.

Requeue only while the job is still RUNNING. A job that is already ending (``scancel``, a time limit
reached without a warning signal) reads COMPLETING to ``scontrol``, which does not say whether the user
cancelled it; resurrecting a cancelled job would be worse than asking for a resubmission, so then the
checkpoint is written and the process exits without requeueing.
"""
from __future__ import annotations

import os
import signal
import subprocess
import warnings

import torch

from gsam.config.checks import ConfigError
from gsam.distributed import all_reduce_sum

EXIT_REQUEUED = 0  # the work goes on in the requeued job; nothing failed
EXIT_STOPPED = 3  # stopped early and not requeued: rerun the same command to resume


class Preempted(SystemExit):
    """Raised on every rank once the checkpoint is written. A SystemExit, so that submitit writes no result
    for a job that will run again, and Hydra's launcher does not report it as a failed task."""

    def __init__(self, message: str, requeued: bool):
        super().__init__(EXIT_REQUEUED if requeued else EXIT_STOPPED)
        self.message, self.requeued = message, requeued


def _signal_number(name: str) -> signal.Signals:
    name = str(name).upper()
    sig = getattr(signal, name if name.startswith("SIG") else "SIG" + name, None)
    if not isinstance(sig, signal.Signals):
        raise ConfigError(f"train.preempt_signals: {name!r} is not a signal name (e.g. USR1, USR2, TERM)")
    return sig


class Preemption:
    """Signal flag + agreement across ranks. ``install()`` in the main thread, ``uninstall()`` when done."""

    def __init__(self, signals, device: torch.device):
        if isinstance(signals, str):  # train.preempt_signals=USR2: one name, or several separated by commas
            signals = [s for s in signals.split(",") if s.strip()]
        self.signals = [_signal_number(s.strip() if isinstance(s, str) else s) for s in signals or ()]
        self.device = device
        self.received: int | None = None
        self.triggered = False  # every rank saw should_stop() return True (sticky)
        self._previous: dict = {}

    def _on_signal(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.received is not None:  # a second Ctrl-C: abort now, no checkpoint
            raise KeyboardInterrupt
        if self.received is None:  # the first one names the cause; no I/O here (the main thread may hold a lock)
            self.received = signum

    def install(self) -> "Preemption":
        try:
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._on_signal)
        except ValueError:  # not the main thread (an embedding application): its own handlers stay
            warnings.warn("gsam: not in the main thread, preemption signals are not handled", stacklevel=2)
        return self

    def uninstall(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def should_stop(self) -> bool:
        """Called after every step by every rank: True on all ranks as soon as one has been signalled."""
        if not self.signals:  # handling switched off (train.preempt_signals=[]): no per-step all-reduce
            return False
        if not self.triggered:
            flag = torch.tensor([float(self.received is not None)], device=self.device)
            self.triggered = all_reduce_sum(flag).item() > 0
        return self.triggered

    def stop(self, step: int, save_checkpoint, close_logs, main: bool) -> Preempted:
        """At the agreed step boundary: checkpoint (every rank), close the logs (wandb flushed before Slurm
        ends the job), requeue from rank 0; returns the exception every rank raises."""
        save_checkpoint()
        close_logs()
        requeued, what = requeue_slurm_job() if main else (False, "")
        # the all-reduce also keeps the other ranks alive until rank 0 has requeued
        requeued = all_reduce_sum(torch.tensor([float(requeued)], device=self.device)).item() > 0
        message = f"[gsam] {self.cause}: stopped after step {step}, checkpoint written; {what}"
        if main:
            print(message, flush=True)
        return Preempted(message, requeued)

    @property
    def cause(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else "a signal to another rank"


def slurm_job_state(job_id: str) -> str | None:
    try:
        out = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True,
                             timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    fields = dict(kv.split("=", 1) for kv in out.split() if "=" in kv)
    return fields.get("JobState")


def requeue_slurm_job() -> tuple[bool, str]:
    """Requeue this Slurm job if it is still running; (requeued, what happened) for the log."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return False, "not a Slurm job: rerun the same command to resume"
    state = slurm_job_state(job)
    if state != "RUNNING":
        return False, (f"Slurm job {job} is {state or 'unknown to scontrol'} (cancelled or past its time limit), "
                       "not requeued: resubmit the same command to resume")
    try:
        subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60, check=True)
    except subprocess.CalledProcessError as e:
        return False, f"`scontrol requeue {job}` failed ({e.stderr.strip()}): resubmit the same command to resume"
    except (OSError, subprocess.SubprocessError) as e:
        return False, f"`scontrol requeue {job}` failed ({e}): resubmit the same command to resume"
    return True, f"requeued Slurm job {job}; it resumes from this checkpoint"
