"""train.divergence_factor (gsam/state/divergence.py): a finite but exploding loss stops the run before the exploded
step is checkpointed, and the message says where the good weights are. Off by default."""
import pytest
from support.inproc import run_main

from gsam.state.checkpoint import load

# lr 50 with a 500-step warm-up: lr 0.1 x step, so the loss climbs from 2.3 within a few steps, always finite
EXPLODE = ["optimizer.lr=50", "schedule.warmup_steps=500", "optimizer.clip_grad_norm=null", "data.batch_size=64",
           "train.max_steps=30", "train.checkpoint_every_steps=1", "train.eval_every_epochs=100"]


@pytest.mark.slow
def test_an_exploding_finite_loss_stops_the_run_before_its_checkpoint(tmp_path, demo_root):
    done = run_main("train.py", tmp_path, demo_root, *EXPLODE, "train.divergence_factor=3")
    assert done.returncode == 1, done.stderr[-2000:]
    line = done.stderr.strip().splitlines()[-1]
    assert "train.divergence_factor=3" in line and "median of the last" in line, line
    stopped = int(line.split("stopping at step ")[1].split(":")[0])
    assert stopped > 5  # the guard waits for 5 steps of history
    held = load(tmp_path / "checkpoints" / "last.pt")["loop"]["step"]
    assert held == stopped - 1 and f"last.pt holds step {held}" in line


@pytest.mark.slow
def test_without_the_factor_the_same_run_goes_on(tmp_path, demo_root):
    done = run_main("train.py", tmp_path, demo_root, *EXPLODE, "train.max_steps=12")
    assert done.returncode == 0, done.stderr[-2000:]
    assert load(tmp_path / "checkpoints" / "last.pt")["loop"]["step"] == 12
