"""Any error ends the run within seconds, with its workers: the loader workers ignore Slurm's signals (the main
process stops them, gsam/failsafe.py), else Python's exit waits on them for ever. Each case runs with
DataLoader workers, under a timeout (a hang fails the test), and checks that no process it started (tagged by
an environment variable: torchrun puts its ranks in sessions of their own) outlives it. Under torchrun a rank
that fails ends the other too."""
import os
import shutil
import struct
import sys
import zlib
from pathlib import Path

import pytest

from support.cli import command, run_bounded

WORKERS = ["data.num_workers=2"]
TIMEOUT = 240  # a demo run starts in ~15 s on 2 free cores, ~60 s when they are shared four ways; a hang is for ever


def _one_line(done, *words):
    assert done.returncode == 2, done.stderr[-3000:]
    line = done.stderr.strip()
    assert line.count("\n") == 0 and line.startswith("error: "), line[-3000:]
    for w in words:
        assert w in line, line


@pytest.mark.slow
def test_an_error_inside_the_loop_with_workers_running_exits_and_leaves_no_process(tmp_path, demo_root):
    # a timm option that builds but fails at the first forward: an exception the trainer does not expect
    done = run_bounded(command("train.py", tmp_path, demo_root, *WORKERS, "model.kwargs.img_size=64"), TIMEOUT)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "doesn't match model" in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("key", ["train.log_every", "train.eval_every_epochs"])
def test_a_zero_period_is_one_line_not_a_hang(tmp_path, demo_root, key):
    done = run_bounded(command("train.py", tmp_path, demo_root, *WORKERS, f"{key}=0"), TIMEOUT)
    _one_line(done, f"{key}=0", "expected an integer >= 1")


@pytest.fixture
def full_disk(tmp_path):
    """A 32 KiB file system (tmpfs) for the run folder: room for the config files and a few dozen log records,
    then ENOSPC as on a full disk. (The kernel's file-size limit, which test_disk_full uses, would also fail the
    DataLoader workers' shared-memory files.) Mounting needs root."""
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(disk)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    yield disk / "run"
    subprocess.run(["umount", "-l", str(disk)], check=True)


# the logs reach the limit first (about 20 records), in cheap steps
DISK = ["train.checkpoint_every_steps=1000", "train.keep_top_k=0", "data.batch_size=32", "sam.m=16"]


@pytest.mark.slow
def test_a_full_disk_while_writing_metrics_is_one_line(full_disk, demo_root):
    done = run_bounded(command("train.py", full_disk, demo_root, *WORKERS, *DISK), TIMEOUT)
    _one_line(done, f"cannot write {full_disk / 'metrics.jsonl'}", "No space left on device", "free space")


@pytest.mark.slow
def test_a_full_disk_on_rank_0_ends_both_torchrun_ranks(full_disk, demo_root):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py",
           *command("train.py", full_disk, demo_root, "data.num_workers=1", *DISK)[2:]]
    done = run_bounded(cmd, TIMEOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode != 0
    assert f"error: cannot write {full_disk / 'metrics.jsonl'}" in done.stderr, done.stderr[-3000:]


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that declares ``width`` x ``height`` (1-bit grey) and holds no pixels: PIL refuses it at open
    (DecompressionBombError) before decoding anything, as it does a real 20000x20000 scan."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) +
                     chunk(b"IEND", b""))


def two_class_copy(demo_root: str, root: Path, train: int, val: int) -> Path:
    """The first ``train``/``val`` images of the demo's digits 0 and 1: a set whose one batch reads every file."""
    for split, n in (("train", train), ("val", val)):
        for c in ("digit_0", "digit_1"):
            (root / split / c).mkdir(parents=True)
            for f in sorted((Path(demo_root) / split / c).iterdir())[:n]:
                shutil.copy(f, root / split / c / f.name)
    return root


@pytest.mark.slow
def test_a_decompression_bomb_in_a_train_class_is_skipped_naming_the_file(tmp_path, demo_root):
    root = two_class_copy(demo_root, tmp_path / "data", train=8, val=4)
    bomb = root / "train" / "digit_0" / "huge.png"
    (root / "train" / "digit_0" / sorted(os.listdir(root / "train" / "digit_0"))[0]).unlink()
    _png_header_only(bomb, 20000, 20000)
    small = ["data.name=two_digits", "data.num_classes=2", "data.batch_size=16", "sam.m=8", "train.max_steps=1", "data.num_workers=1"]
    done = run_bounded(command("train.py", tmp_path / "run", root, *small), TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"unreadable image skipped: {bomb}" in done.stderr and "DecompressionBombError" in done.stderr
