"""A run killed with kill -9 and rerun ends bit for bit where the uninterrupted run ends, with training-time
randomness on (drop-path draws from the torch CPU generator every step). The kill lands at three chosen places of
the checkpoint cycle (every 2 steps) and of the epoch (11 steps): a failure names its place and can be rerun."""
import json
import os
import signal
import threading
import time

import pytest

from support.cli import start_train, train_losses, train_steps
from support.inproc import run_main
from support.nets import assert_same_weights
from gsam.state.checkpoint import load

RUN = ["+model.kwargs.drop_path_rate=0.1", "schedule.epochs=2", "data.batch_size=128", "train.log_every=1",
       "train.checkpoint_every_steps=2"]  # 11 steps per epoch, 22 in all
# the step after which the kill is sent (the process may finish a little more before it lands)
KILL_AFTER = {"just_before_a_checkpoint": 5, "just_after_a_checkpoint": 6, "across_the_epoch_end": 11}


def _kill_when_logged(procs: dict, outs: dict) -> dict:
    """kill -9 each run's process group once it has logged its KILL_AFTER step; {place: why it could not be
    killed} for a run that ended first."""
    failed, pending = {}, dict(procs)
    while pending:
        for place, proc in list(pending.items()):
            if any(s >= KILL_AFTER[place] for s in train_steps(outs[place])):
                os.killpg(proc.pid, signal.SIGKILL)
            elif proc.poll() is None:
                continue
            else:
                failed[place] = f"the run ended (exit {proc.returncode}) before step {KILL_AFTER[place]}"
            proc.communicate()
            del pending[place]
        time.sleep(0.05)
    return failed


@pytest.fixture(scope="module")
def runs(tmp_path_factory, demo_root):
    """The three runs to be killed start at once, in processes of their own, and the uninterrupted run trains in
    this process meanwhile (each has one thread: on 2 cores the four overlap instead of waiting for each other's
    interpreter start-up and steps); a thread sends each kill once its run has logged its step."""
    outs = {place: tmp_path_factory.mktemp(place) for place in KILL_AFTER}
    procs = {place: start_train(outs[place], demo_root, *RUN) for place in KILL_AFTER}
    failed: dict = {}
    killer = threading.Thread(target=lambda: failed.update(_kill_when_logged(procs, outs)), daemon=True)
    killer.start()
    try:
        straight = tmp_path_factory.mktemp("straight")
        done = run_main("train.py", straight, demo_root, *RUN)
        assert done.returncode == 0, done.stderr[-2000:]
        killer.join(timeout=600)
    finally:
        for proc in procs.values():  # an error above leaves no run behind
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
    return straight, {place: (outs[place], procs[place].returncode, failed.get(place)) for place in KILL_AFTER}


@pytest.mark.slow
@pytest.mark.parametrize("place", list(KILL_AFTER))
def test_kill_9_then_rerun_is_bit_identical(runs, demo_root, place):
    straight, killed = runs
    out, returncode, failure = killed[place]
    assert failure is None, failure
    assert returncode == -signal.SIGKILL
    resumed_at = load(out / "checkpoints" / "last.pt")["loop"]["step"]
    assert resumed_at < 22
    done = run_main("train.py", out, demo_root, *RUN)  # the rerun: no process boundary needed
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resumed at step {resumed_at}" in done.stdout
    a, b = load(straight / "checkpoints" / "last.pt"), load(out / "checkpoints" / "last.pt")
    assert a["loop"] == b["loop"]
    assert_same_weights(a["model"], b["model"])
    assert train_losses(straight) == train_losses(out)  # every step's loss, the replayed ones included
    assert json.loads((straight / "results.json").read_text())["results"] == \
        json.loads((out / "results.json").read_text())["results"]
