"""A beton is checked against its sidecar before use: a truncated copy (a copy to local scratch cut short)
is refused in one line naming it (FFCV itself would hang training for ever on it); a copy of the right size with
a hole, or a sidecar from another beton, is refused too; ``write_betons.py --verify`` checks every byte."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from support import ROOT
from support.marks import needs_ffcv
from support.inproc import run_main
from support.images import small_tree

# slow: every test shares a module fixture that runs write_betons.py in a subprocess (~15 s on an idle 2-core VM)
pytestmark = [pytest.mark.slow,
              needs_ffcv]


@pytest.fixture(scope="module")
def betons(tmp_path_factory):
    """train/minival/val betons of a small tree (val: a 600x400 image among small ones: records of 2 sizes)."""
    root = small_tree(tmp_path_factory.mktemp("ilsvrc"), {"big.JPEG": np.full((400, 600, 3), 7, np.uint8)})
    out = tmp_path_factory.mktemp("betons")
    res = subprocess.run([sys.executable, "scripts/write_betons.py", "--imagenet", str(root), "--out", str(out),
                          "--workers", "1", "--no-progress", "--minival-fraction", "0.2"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def copy(betons, tmp_path, split="val"):
    shutil.copy(betons / f"{split}.beton", tmp_path / f"{split}.beton")
    shutil.copy(betons / f"{split}.json", tmp_path / f"{split}.json")
    return tmp_path / f"{split}.beton", json.loads((tmp_path / f"{split}.json").read_text())["beton"]


def test_a_sound_beton_passes_and_its_sidecar_records_it(betons):
    from gsam.data.beton_check import check_beton

    for split in ("train", "minival", "val"):
        meta = json.loads((betons / f"{split}.json").read_text())
        assert meta["version"] == 2 and meta["beton"]["bytes"] == (betons / f"{split}.beton").stat().st_size
        check_beton(betons / f"{split}.beton", meta["beton"], full=True)


@pytest.mark.parametrize("cut", [100, 0.5])
def test_a_truncated_beton_is_refused_naming_it(betons, tmp_path, cut):
    from gsam.data.beton_check import check_beton

    path, recorded = copy(betons, tmp_path)
    size = path.stat().st_size
    os.truncate(path, size - cut if isinstance(cut, int) else int(size * cut))
    with pytest.raises(ValueError, match=rf"^{path}: [\d,]+ bytes, but {recorded['bytes']:,} were written"):
        check_beton(path, recorded)


def test_a_hole_of_zeros_or_a_foreign_sidecar_is_refused(betons, tmp_path):
    """Same size, other contents: a copy that preallocated the file and stopped (a hole of zeros over 1/64
    of the file), or the sidecar of another beton beside it."""
    from gsam.data.beton_check import check_beton

    path, recorded = copy(betons, tmp_path)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(size // 2)
        f.write(bytes(size // 32))
    with pytest.raises(ValueError, match=rf"^{path}: its contents differ from those written"):
        check_beton(path, recorded)
    minival = json.loads((betons / "minival.json").read_text())["beton"]
    with pytest.raises(ValueError, match="bytes, but|contents differ"):
        check_beton(betons / "val.beton", minival)


def test_verify_reads_every_byte(betons, tmp_path):
    """One flipped byte inside a page the fingerprint does not sample: the start-up check passes, --verify
    names the file (exit 2)."""
    from gsam.data.beton_check import BLOCK, SAMPLES, check_beton

    path, recorded = copy(betons, tmp_path)
    size = path.stat().st_size
    step = size // SAMPLES
    offset = next(o for o in range(size // 2, size, 4099) if o % step > BLOCK + 16)  # between two sampled blocks
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))
    check_beton(path, recorded)  # the cheap check cannot see it
    res = subprocess.run([sys.executable, "scripts/write_betons.py", "--verify", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.strip() == (f"error: {path}: its BLAKE2b differs from the one "
                                                          "written; copy it again, or rewrite it with "
                                                          "scripts/write_betons.py"), res.stderr


def test_a_sidecar_without_the_record_warns_and_is_used(betons, tmp_path):
    from gsam.data.beton_check import check_beton

    path, _ = copy(betons, tmp_path)
    with pytest.warns(UserWarning, match=rf"{path}: unchecked, its sidecar records no size"):
        check_beton(path, None)


READ = """
import sys, torch
sys.path.insert(0, {root!r})
from gsam.data.ffcv_loaders import FFCVLoader
loader = FFCVLoader({beton!r}, train=False, img_size=16, mean=(0,) * 3, std=(1,) * 3, batch=2, rank=0, world=1, seed=0,
                    num_workers=1, device=torch.device("cpu"), channels_last=False, min_crop_scale=0.5, crop_pct=1.0,
                    os_cache=False, with_index=True)
for batch in loader:
    pass
"""


def test_a_dead_reader_thread_ends_the_epoch_instead_of_hanging(betons, tmp_path):
    """Past the start-up check (a file damaged after it, or a sidecar from before checks): FFCV's reader thread
    fails on the cut file and the loader raises, naming the beton, instead of waiting for a batch for ever."""
    from ffcv.types import ALLOC_TABLE_TYPE, HeaderType

    path, _ = copy(betons, tmp_path, "train")
    # Every record's size in the allocation table halved (a damaged table has the same file size, so only a
    # read shows it): the decoder's reshape fails on the first image. Cutting the table's last row instead
    # leaves the lookup reading past the end of an array, which succeeds or not with the allocator's layout.
    header = np.fromfile(path, dtype=HeaderType, count=1)[0]
    table = np.memmap(path, dtype=ALLOC_TABLE_TYPE, mode="r+", offset=int(header["alloc_table_ptr"]))
    table["size"] //= 2
    table.flush()
    del table
    res = subprocess.run([sys.executable, "-c", READ.format(root=str(ROOT), beton=str(path))], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1] == (f"RuntimeError: {path}: FFCV's reader thread died (its error is "
                                                   "printed above); the file may be damaged: check it with "
                                                   "scripts/write_betons.py --verify")


def test_training_on_a_truncated_beton_exits_in_one_line(demo_root, demo_betons, tmp_path):
    """A train.beton cut short: FFCV's loader thread fails on it and the main thread would wait on its queue for
    ever, so the check before the loader starts must end the run in one line."""
    betons = shutil.copytree(demo_betons, tmp_path / "betons")  # the session's betons, damaged in a copy
    beton = betons / "train.beton"
    os.truncate(beton, beton.stat().st_size - 100)
    res = run_main("train.py", tmp_path / "run", demo_root, "data.loader=ffcv", f"data.betons={betons}",
                   "train.max_steps=1")
    assert res.returncode == 2, res.stderr[-2000:]
    last = res.stderr.strip().splitlines()[-1]
    assert str(beton) in last and "bytes, but" in last and "were written" in last, last


def test_os_cache_warns_when_the_beton_is_larger_than_the_nodes_memory(betons, monkeypatch):
    """A node whose memory is smaller than train.beton (mocked: the memory, not the beton, is what cannot be
    made here) gets one line before training; a node with room gets none."""
    import warnings

    from gsam.data import ffcv_loaders

    size = (betons / "train.beton").stat().st_size
    monkeypatch.setattr(ffcv_loaders, "node_memory_bytes", lambda: size - 1)
    with pytest.warns(UserWarning) as caught:
        ffcv_loaders.warn_if_uncacheable(betons / "train.beton")
    (w,) = caught
    assert "\n" not in str(w.message) and str(w.message).startswith(f"data.os_cache=true: {betons / 'train.beton'}")
    monkeypatch.setattr(ffcv_loaders, "node_memory_bytes", lambda: size)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ffcv_loaders.warn_if_uncacheable(betons / "train.beton")
