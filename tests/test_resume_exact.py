"""A run killed with kill -9 and rerun ends bit for bit where the uninterrupted run ends, with training-time
randomness on (drop-path draws from the torch CPU generator every step). The kill lands at three chosen places of
the checkpoint cycle (every 2 steps) and of the epoch (11 steps): a failure names its place and can be rerun."""
import json
import os
import signal

import pytest

from support.cli import start_train, train_losses, wait_for_step
from support.inproc import run_main
from support.nets import assert_same_weights
from gsam.state.checkpoint import load

RUN = ["+model.kwargs.drop_path_rate=0.1", "schedule.epochs=2", "data.batch_size=128", "train.log_every=1",
       "train.checkpoint_every_steps=2"]  # 11 steps per epoch, 22 in all
# the step after which the kill is sent (the process may finish a little more before it lands)
KILL_AFTER = {"just_before_a_checkpoint": 5, "just_after_a_checkpoint": 6, "across_the_epoch_end": 11}


@pytest.fixture(scope="module")
def straight(tmp_path_factory, demo_root):
    out = tmp_path_factory.mktemp("straight")
    done = run_main("train.py", out, demo_root, *RUN)
    assert done.returncode == 0, done.stderr[-2000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("place", list(KILL_AFTER))
def test_kill_9_then_rerun_is_bit_identical(tmp_path, demo_root, straight, place):
    kill_at = KILL_AFTER[place]
    proc = start_train(tmp_path, demo_root, *RUN)
    try:
        wait_for_step(proc, tmp_path, kill_at)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    resumed_at = load(tmp_path / "checkpoints" / "last.pt")["loop"]["step"]
    assert resumed_at < 22
    done = run_main("train.py", tmp_path, demo_root, *RUN)  # the rerun: no process boundary needed
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resumed at step {resumed_at}" in done.stdout
    a, b = load(straight / "checkpoints" / "last.pt"), load(tmp_path / "checkpoints" / "last.pt")
    assert a["loop"] == b["loop"]
    assert_same_weights(a["model"], b["model"])
    assert train_losses(straight) == train_losses(tmp_path)  # every step's loss, the replayed ones included
    assert json.loads((straight / "results.json").read_text())["results"] == \
        json.loads((tmp_path / "results.json").read_text())["results"]
