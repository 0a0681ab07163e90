"""Preemption without a cluster: the signal flag, handler restore, the requeue decision against a stand-in
`scontrol`, and a run signalled mid-training that stops at a step boundary and resumes bit for bit.
(tests/test_slurm.py does the same on a real Slurm cluster, with requeue.)"""
import os
import signal

import pytest
import torch

import gsam
from gsam.state import preemption
from gsam.state.checkpoint import load
from gsam.config.checks import ConfigError
from gsam.run.experiment import run
from gsam.state.preemption import Preempted, Preemption, requeue_slurm_job
from support.cli import train_steps
from support.nets import assert_same_weights


def test_flag_is_set_by_the_signal_and_previous_handlers_come_back():
    seen = []
    previous = signal.signal(signal.SIGUSR2, lambda s, f: seen.append(s))
    try:
        p = Preemption(["USR2", "SIGTERM"], torch.device("cpu")).install()
        assert not p.should_stop()
        os.kill(os.getpid(), signal.SIGUSR2)
        assert p.received == signal.SIGUSR2 and p.cause == "SIGUSR2"
        assert p.should_stop() and p.triggered
        p.uninstall()
        os.kill(os.getpid(), signal.SIGUSR2)
        assert seen == [signal.SIGUSR2]  # the handler from before is back
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_bad_signal_name_names_the_key():
    with pytest.raises(ConfigError, match=r"train\.preempt_signals: 'SIGNOPE'"):
        Preemption(["SIGNOPE"], torch.device("cpu"))


def test_no_signals_means_no_handlers(monkeypatch):
    calls = []
    monkeypatch.setattr(preemption, "all_reduce_sum", lambda t: calls.append(t) or t)
    p = Preemption([], torch.device("cpu")).install()
    assert not p.should_stop() and calls == []  # no per-step collective when handling is off
    assert signal.getsignal(signal.SIGUSR2) is signal.SIG_DFL
    p.uninstall()


@pytest.fixture
def fake_scontrol(tmp_path, monkeypatch):
    """`scontrol -o show job ID` answers JobState=$FAKE_STATE; `scontrol requeue ID` is logged, and fails with
    $FAKE_REQUEUE_ERROR when set."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls"
    (bin_dir / "scontrol").write_text(
        "#!/bin/bash\n"
        f'echo "$@" >> {log}\n'
        'if [ "$1" = requeue ]; then [ -n "$FAKE_REQUEUE_ERROR" ] && { echo "$FAKE_REQUEUE_ERROR" >&2; exit 1; }; '
        "exit 0; fi\n"
        'echo "JobId=$4 JobName=x JobState=$FAKE_STATE Reason=None"\n')
    (bin_dir / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.delenv("FAKE_REQUEUE_ERROR", raising=False)
    return log


def test_requeue_only_a_running_job(fake_scontrol, monkeypatch):
    monkeypatch.setenv("FAKE_STATE", "RUNNING")
    requeued, what = requeue_slurm_job()
    assert requeued and "requeued Slurm job 4242" in what
    assert fake_scontrol.read_text().splitlines() == ["-o show job 4242", "requeue 4242"]


def test_a_cancelled_job_is_not_requeued(fake_scontrol, monkeypatch):
    monkeypatch.setenv("FAKE_STATE", "COMPLETING")  # what scancel leaves while the job ends
    requeued, what = requeue_slurm_job()
    assert not requeued and "COMPLETING" in what and "resubmit" in what
    assert "requeue" not in fake_scontrol.read_text()


def test_a_refused_requeue_says_so(fake_scontrol, monkeypatch):
    monkeypatch.setenv("FAKE_STATE", "RUNNING")
    monkeypatch.setenv("FAKE_REQUEUE_ERROR", "Requested operation is presently disabled")
    requeued, what = requeue_slurm_job()
    assert not requeued and "presently disabled" in what and "resubmit" in what


def test_outside_slurm_nothing_is_requeued(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert requeue_slurm_job() == (False, "not a Slurm job: rerun the same command to resume")


PREEMPTIBLE = ["data.batch_size=32", "train.max_steps=10", "train.checkpoint_every_steps=1000",
               "train.preempt_signals=[USR2]"]


@pytest.mark.slow
def test_a_signalled_run_stops_at_a_step_boundary_and_resumes_bit_for_bit(tmp_path, monkeypatch, demo_root,
                                                                          demo_config):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    run(demo_config(tmp_path / "straight", demo_root, *PREEMPTIBLE))

    out = tmp_path / "preempted"
    step = gsam.GSAM.step
    calls = []

    def signalled_during_step_3(self, closure):
        """The signal arrives inside the 3rd step, before its passes: the run must finish that step, then stop."""
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGUSR2)
        return step(self, closure)

    previous = signal.signal(signal.SIGUSR2, signal.SIG_IGN)  # a late signal must not end pytest
    try:
        with monkeypatch.context() as patch, pytest.raises(Preempted) as stop:
            patch.setattr(gsam.GSAM, "step", signalled_during_step_3)
            run(demo_config(out, demo_root, *PREEMPTIBLE))
        assert signal.getsignal(signal.SIGUSR2) is signal.SIG_IGN  # restored after the run
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert stop.value.code == preemption.EXIT_STOPPED and not stop.value.requeued
    assert "SIGUSR2: stopped after step 3" in stop.value.message and "not a Slurm job" in stop.value.message
    assert len(calls) == 3  # no step was started after the signalled one
    assert load(out / "checkpoints" / "last.pt")["loop"]["step"] == 3 and not (out / "results.json").exists()

    run(demo_config(out, demo_root, *PREEMPTIBLE))  # the rerun resumes at step 3
    assert train_steps(out) == list(range(1, 11))
    a, b = load(tmp_path / "straight" / "checkpoints" / "last.pt"), load(out / "checkpoints" / "last.pt")
    assert a["loop"] == b["loop"]
    assert_same_weights(a["model"], b["model"])
