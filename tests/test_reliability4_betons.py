"""scripts/write_betons.py under the faults of issue 31: a writer worker killed while many chunks are still to
be written, the main process killed or sent SIGTERM alone, a second writer on the same --out, SIGTERM or
Ctrl-C to the whole process group. Each must end within seconds with one line, leave no process behind and no
temporary file (except after kill -9 of the main process, whose .tmp the next writer removes).

The writer runs in a subprocess (the process boundary is the point) with a hook in its image reader: every
worker marks a file when it starts a record, sleeps ``R4_SLOW`` s per record (the cost of a real JPEG, so that
a test can act while the workers write) and, with ``R4_KILL``, kills itself on the first image (kill -9)."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from support import ROOT
from support.marks import needs_ffcv
from support.cli import run_bounded, tagged_processes
from support.images import WNIDS, save

pytestmark = [needs_ffcv,
              pytest.mark.slow]  # write_betons in subprocesses (torch's import, FFCV's JIT): 5-10 s each

HOOK = """
import os, sys, time
import gsam.data.betons as betons
load = betons._ImageList.__getitem__
def hooked(self, i):
    open(os.environ["R4_STAMP"], "a").close()
    if os.environ.get("R4_KILL") and self.samples[i][0].endswith("00000.JPEG"):
        os.kill(os.getpid(), 9)
    time.sleep(float(os.environ.get("R4_SLOW", "0")))
    return load(self, i)
betons._ImageList.__getitem__ = hooked
script = {script!r}
sys.argv = [script] + sys.argv[1:]
exec(compile(open(script).read(), script, "exec"), {{"__name__": "__main__", "__file__": script}})
"""


def linked_tree(root, n: int):
    """train/ with 3 images in each of 2 classes; val/ with ``n`` hard links of one 8x8 JPEG in the first class
    (a tree of n images that costs one file) and one JPEG in the second."""
    rng = np.random.default_rng(0)
    tiny = lambda: rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)  # noqa: E731
    for wnid in WNIDS:
        for k in range(3):
            save(root / "train" / wnid / f"{k}.JPEG", tiny())
    save(root / "val" / WNIDS[1] / "0.JPEG", tiny())
    first = root / "val" / WNIDS[0] / "00000.JPEG"
    save(first, tiny())
    for k in range(1, n):
        os.link(first, first.with_name(f"{k:05d}.JPEG"))
    return root


def command(root, out) -> list[str]:
    return [sys.executable, "-c", HOOK.format(script=str(ROOT / "scripts" / "write_betons.py")), "--imagenet",
            str(root), "--out", str(out), "--workers", "2", "--no-progress", "--splits", "val"]


def hook_env(tmp_path, **extra) -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "R4_STAMP": str(tmp_path / "writing"), **extra}


def start(cmd, env, tag: str) -> subprocess.Popen:
    """``cmd`` in a session of its own (a process group to signal), its descendants tagged for tagged_processes."""
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**env, "GSAM_TEST_TAG": tag})


def wait_for(condition, what: str, timeout: float):
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"no {what} after {timeout} s"
        time.sleep(0.05)


def writing(proc, tmp_path, timeout=120) -> None:
    """Until a writer worker of ``proc`` has started a record."""
    wait_for(lambda: (tmp_path / "writing").exists() or proc.poll() is not None, "writer worker", timeout)
    assert proc.poll() is None, proc.communicate()


def ended(proc, tag: str, timeout: float = 20) -> tuple[str, str]:
    """``proc``'s stdout and stderr once it has exited within ``timeout`` s and none of its processes is left."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        raise AssertionError(f"still running {timeout} s after the signal: {proc.communicate()[1][-2000:]}") from None
    wait_for(lambda: not tagged_processes(tag), "end of every writer process", 10)
    return out, err


def test_a_killed_worker_with_many_chunks_left_ends_the_script(tmp_path):
    """kill -9 of one writer worker on the first image of 4,000: more chunks than the 64 KiB queue pipe holds
    were still to be written. The script used to print its error and then never exit (at exit, Python's
    queue waited to write those chunks into the pipe nobody read); it must exit 1 within seconds."""
    root = linked_tree(tmp_path / "ilsvrc", 4000)
    out = tmp_path / "out"
    res = run_bounded(command(root, out), timeout=90, env=hook_env(tmp_path, R4_KILL="1", R4_SLOW="0.02"))
    assert res.returncode == 1, res.stderr[-3000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {out / 'val.beton'}: writer worker") and "exited with signal 9" in last, last
    assert sorted(p.name for p in out.iterdir()) == []


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_the_workers_end_with_the_main_process(tmp_path, signum):
    """Only the main process is signalled (``timeout`` sends SIGTERM to its pid; kill -9; the OOM killer): its
    writer workers used to go on under PID 1. After SIGTERM the script stops them, removes its .tmp and says
    so in one line (exit 143); after kill -9 the kernel kills them (PR_SET_PDEATHSIG)."""
    root = linked_tree(tmp_path / "ilsvrc", 200)
    out, tag = tmp_path / "out", f"r4-main-{signum}-{os.getpid()}"
    proc = start(command(root, out), hook_env(tmp_path, R4_SLOW="0.5"), tag)
    writing(proc, tmp_path)
    os.kill(proc.pid, signum)
    _, err = ended(proc, tag)
    if signum == signal.SIGTERM:
        assert proc.returncode == 143, err[-3000:]
        assert err.strip().splitlines()[-1].startswith("error: stopped by SIGTERM"), err[-3000:]
        assert sorted(p.name for p in out.iterdir()) == []


def test_a_second_writer_on_the_same_out_is_refused_and_sigterm_to_the_group_cleans_up(tmp_path):
    """Two writers into one --out wrote the same .tmp (one failed with "No such file", the other with "negative
    dimensions are not allowed" and hung). The second is refused in one line naming the folder and the
    holder; the first then gets SIGTERM with its whole process group (Slurm, ``timeout -s TERM`` of a group)
    and must leave neither its .tmp, nor its lock file, nor a process."""
    root = linked_tree(tmp_path / "ilsvrc", 200)
    out, tag = tmp_path / "out", f"r4-lock-{os.getpid()}"
    first = start(command(root, out), hook_env(tmp_path, R4_SLOW="0.5"), tag)
    writing(first, tmp_path)
    second = run_bounded(command(root, out), timeout=60, env=hook_env(tmp_path))
    assert second.returncode == 2, second.stderr[-3000:]
    line = second.stderr.strip()
    assert "\n" not in line and line.startswith(f"error: --out {out}: another beton writer is writing there "
                                                f"(pid {first.pid} on host"), line
    assert first.poll() is None  # the first goes on
    os.killpg(first.pid, signal.SIGTERM)
    _, err = ended(first, tag)
    assert first.returncode == 143 and "stopped by SIGTERM" in err, err[-3000:]
    assert sorted(p.name for p in out.iterdir()) == []


def test_ctrl_c_stops_the_write_and_leaves_nothing(tmp_path):
    """Ctrl-C (SIGINT to the foreground process group): the script used to stay alive (10 minutes seen)."""
    root = linked_tree(tmp_path / "ilsvrc", 200)
    out, tag = tmp_path / "out", f"r4-int-{os.getpid()}"
    proc = start(command(root, out), hook_env(tmp_path, R4_SLOW="0.5"), tag)
    writing(proc, tmp_path)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = ended(proc, tag)
    assert proc.returncode == 130 and err.strip().splitlines()[-1].startswith("error: stopped by SIGINT"), err
    assert sorted(p.name for p in out.iterdir()) == []


def test_the_next_writer_removes_the_temporary_file_of_a_killed_one(tmp_path):
    """kill -9 of the main process cannot remove its .tmp: the next writer on the folder does, under the lock,
    whichever splits it writes (here a train.beton.tmp while writing val)."""
    from support import load_script

    root = linked_tree(tmp_path / "ilsvrc", 2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "train.beton.tmp").write_bytes(b"partial")
    (out / "notes.tmp").write_text("not ours")
    write_betons = load_script("write_betons")
    assert write_betons.main(["--imagenet", str(root), "--out", str(out), "--workers", "1", "--no-progress",
                              "--splits", "val"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["notes.tmp", "val.beton", "val.json"]
