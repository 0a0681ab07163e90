"""One run per output folder, a resume that refuses a changed config, logs that record a replayed step once,
and a checkpoint history to step back to after a run that diverged with finite weights."""
import csv
import os
import shutil
import signal
import socket

import pytest
import torch

from support.cli import records, start_train, train_steps, wait_for_step
from support.inproc import run_main
from gsam.state.checkpoint import load


def _one_line(done):
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert done.stderr.strip().count("\n") == 0, done.stderr
    return done.stderr.strip()


@pytest.mark.slow
def test_a_second_run_on_a_live_folder_is_refused_and_a_killed_holder_frees_it(tmp_path, demo_root):
    first = start_train(tmp_path, demo_root, "data.batch_size=32", "train.checkpoint_every_steps=1")
    try:
        wait_for_step(first, tmp_path, 1)
        line = _one_line(run_main("train.py", tmp_path, demo_root, "seed=1", "train.max_steps=1"))
        assert str(tmp_path) in line and f"pid {first.pid}" in line and socket.gethostname() in line
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.communicate()
    steps = train_steps(tmp_path)
    assert steps == sorted(set(steps))  # nothing from the refused seed-1 run
    done = run_main("train.py", tmp_path, demo_root, "data.batch_size=32", "train.max_steps=3")
    assert done.returncode == 0, done.stderr[-2000:]  # the OS released the killed run's lock


@pytest.mark.slow
def test_a_resume_with_changed_run_keys_is_refused_unless_allowed(tmp_path, demo_root):
    assert run_main("train.py", tmp_path, demo_root, "train.max_steps=2", "data.batch_size=64").returncode == 0
    changed = ["sam.alpha=0.9", "optimizer.weight_decay=0.5", "data.batch_size=64"]
    line = _one_line(run_main("train.py", tmp_path, demo_root, *changed, "train.max_steps=4"))
    assert "sam.alpha: 0.3 -> 0.9" in line and "optimizer.weight_decay: 0.05 -> 0.5" in line
    assert load(tmp_path / "checkpoints" / "last.pt")["loop"]["step"] == 2  # nothing was trained
    # operational keys change freely; allow_changes resumes with the new values in effect
    done = run_main("train.py", tmp_path, demo_root, *changed, "train.max_steps=4", "train.resume=allow_changes",
                   "train.log_every=2", "data.eval_batch_size=100")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "sam.alpha 0.3 -> 0.9" in done.stdout and "resumed at step 2" in done.stdout
    last = load(tmp_path / "checkpoints" / "last.pt")
    assert last["optimizer"]["sharpness"]["alpha"] == 0.9
    decays = {g["weight_decay"] for g in last["optimizer"]["base_optimizer"]["param_groups"]}
    assert 0.5 in decays and 0.05 not in decays
    logged = [r["alpha"] for r in records(tmp_path)]
    assert logged[-1] == pytest.approx(0.9)


@pytest.mark.slow
def test_replayed_steps_and_a_rerun_of_a_finished_run_are_recorded_once(tmp_path, demo_root):
    common = ["data.batch_size=128", "schedule.epochs=2", "train.checkpoint_every_steps=4"]
    assert run_main("train.py", tmp_path, demo_root, *common, "train.max_steps=13").returncode == 0
    # a kill -9 after the checkpoint at step 12 and after step 13 was logged: the rerun replays step 13
    ckpt = load(tmp_path / "checkpoints" / "last.pt")
    assert ckpt["loop"]["step"] == 13
    shutil.copy(tmp_path / "checkpoints" / "step-00000012.pt", tmp_path / "checkpoints" / "last.pt")
    for _ in range(2):  # finish, then rerun the finished run
        done = run_main("train.py", tmp_path, demo_root, *common)
        assert done.returncode == 0, done.stderr[-2000:]
    assert train_steps(tmp_path) == list(range(1, 23))
    val = [r["step"] for r in records(tmp_path, "val")]
    assert val == [11, 22]
    assert [r["step"] for r in csv.DictReader(open(tmp_path / "summary.csv"))] == ["11", "22"]


@pytest.mark.slow
def test_a_diverged_finite_run_keeps_earlier_checkpoints_to_step_back_to(tmp_path, demo_root):
    diverge = ["optimizer.lr=0.5", "schedule.warmup_steps=0", "train.checkpoint_every_steps=1",
               "train.keep_previous=2", "data.batch_size=64", "train.max_steps=5"]  # a bad lr: finite, useless
    done = run_main("train.py", tmp_path, demo_root, *diverge)
    assert done.returncode == 0, done.stderr[-2000:]
    history = sorted((tmp_path / "checkpoints").glob("step-*.pt"))
    assert [p.name for p in history] == ["step-00000003.pt", "step-00000004.pt", "step-00000005.pt"]
    assert os.path.samefile(history[-1], tmp_path / "checkpoints" / "last.pt")
    states = [load(p) for p in history]
    assert [s["loop"]["step"] for s in states] == [3, 4, 5]
    assert any(not torch.equal(v, states[2]["model"][k]) for k, v in states[0]["model"].items())
    # stepping back: copy an earlier one over last.pt and rerun; the abandoned future is dropped
    shutil.copy(history[0], tmp_path / "checkpoints" / "last.pt")
    done = run_main("train.py", tmp_path, demo_root, *diverge[:-1], "train.max_steps=4")
    assert done.returncode == 0 and "resumed at step 3" in done.stdout, done.stderr[-2000:]
    assert [p.name for p in sorted((tmp_path / "checkpoints").glob("step-*.pt"))] == \
        ["step-00000003.pt", "step-00000004.pt"]


@pytest.mark.slow
def test_a_run_stopped_for_non_finite_steps_says_which_checkpoint_holds_good_weights(tmp_path, demo_root):
    done = run_main("train.py", tmp_path, demo_root, "optimizer.lr=1e12", "optimizer.clip_grad_norm=null",
                   "train.max_bad_steps=3", "train.checkpoint_every_steps=1", "schedule.warmup_steps=0",
                   "data.batch_size=64")
    assert done.returncode == 1
    step = load(tmp_path / "checkpoints" / "last.pt")["loop"]["step"]
    assert f"last.pt holds step {step}" in done.stderr


@pytest.mark.slow
def test_a_ddp_run_on_a_held_folder_stops_on_every_rank(tmp_path, demo_root):
    """Under torchrun rank 0 asks for the lock and every rank learns the answer (an all-reduce): both ranks of
    a 2-process run stop at once with the holder named, instead of rank 1 training alone or waiting forever."""
    import subprocess
    import sys

    from support.cli import ROOT, command
    from gsam.state.runlock import lock_output_dir

    held = lock_output_dir(tmp_path)  # this test process is the live holder
    try:
        cmd = command("train.py", tmp_path, demo_root, "train.max_steps=2", "data.batch_size=32", "++sam.m=16")
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
        done = subprocess.run(torchrun + cmd[1:], cwd=ROOT, capture_output=True, text=True, timeout=300)
    finally:
        held.close()
    assert done.returncode != 0
    import re

    # one line from each rank (the two ranks share the pipe, so the lines may interleave)
    holders = re.findall(r"error: output_dir=\S+ is in use by another run \(([^)]*)\)", done.stderr)
    assert sorted(holders) == sorted([f"pid {os.getpid()} on host {socket.gethostname()}",
                                      "rank 0 was refused the lock"]), done.stderr[-3000:]
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "metrics.jsonl").exists()
