"""Slurm signals the whole process group (preemption, time limits): with DataLoader workers running, the
workers ignore the signal and the main process stops at the next step boundary with a checkpoint."""
import os
import signal

import pytest

from support.cli import start_train, wait_for_step
from gsam.state.checkpoint import load
from gsam.state.preemption import EXIT_STOPPED


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR2, signal.SIGINT])
def test_a_signal_to_the_process_group_with_workers_checkpoints(tmp_path, demo_root, sig):
    proc = start_train(tmp_path, demo_root, "data.num_workers=2", "data.batch_size=32",
                       "train.checkpoint_every_steps=1000")
    try:
        wait_for_step(proc, tmp_path, 2)
        os.killpg(proc.pid, sig)  # kill -TERM -<pgid>, as Slurm does
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == EXIT_STOPPED, err[-2000:]
    assert f"{sig.name}: stopped after step" in out and "Traceback" not in err
    assert load(tmp_path / "checkpoints" / "last.pt")["loop"]["step"] >= 2
