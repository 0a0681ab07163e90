"""A checkpoint write that fails for lack of space (here: the kernel's file-size limit, EFBIG, the error a full
disk gives as ENOSPC) leaves the previous checkpoint and no partial file, and says so in one line; a partial
file left by a kill -9 is removed at the next start."""
import pytest
import resource
import signal
import subprocess

from support.cli import ROOT, command
from support.inproc import run_main
from gsam.state.checkpoint import load

RUN = ["data.batch_size=64", "train.checkpoint_every_steps=1", "train.keep_previous=0", "train.keep_top_k=0"]


def _small_disk():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a failed write, not a killed process
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))  # 1 MiB: logs fit, a 4 MiB checkpoint not


@pytest.mark.slow
def test_a_checkpoint_that_does_not_fit_keeps_the_previous_one(tmp_path, demo_root):
    assert run_main("train.py", tmp_path, demo_root, *RUN, "train.max_steps=2").returncode == 0
    leftover = tmp_path / "checkpoints" / ".last.pt.tmp4242"
    leftover.write_bytes(b"half a checkpoint")  # as a kill -9 mid-write leaves it
    done = subprocess.run(command("train.py", tmp_path, demo_root, *RUN, "train.max_steps=4"), cwd=ROOT,
                          capture_output=True, text=True, timeout=600, preexec_fn=_small_disk)
    assert done.returncode == 2, done.stderr[-2000:]
    line = done.stderr.strip()
    assert line.count("\n") == 0, line
    assert str(tmp_path / "checkpoints") in line and "MiB free" in line and "previous one is kept" in line
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.pt"]  # no partial file
    assert load(tmp_path / "checkpoints" / "last.pt")["loop"]["step"] == 2
