"""scripts/write_betons.py on the images that broke it: a val image over FFCV's default 8 MiB page, a writer
worker that fails or is killed, an image FFCV cannot store, a disk without room. Each failure must end the
script within seconds, in one line, with nothing left behind (FFCV's own writer hangs for ever on the first
two: its workers die and the pool waits on them)."""
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from support import ROOT, load_script
from support.marks import needs_ffcv
from support.images import WNIDS, large_photo, save, small_tree as tree


def write(root, out, *args, timeout=180):
    cmd = [sys.executable, "scripts/write_betons.py", "--imagenet", str(root), "--out", str(out), "--workers", "2",
           "--no-progress", "--minival-fraction", "0", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@needs_ffcv
@pytest.mark.slow  # write_betons in a subprocess and FFCV's JIT: ~15 s on 2 busy cores
def test_a_val_image_over_8_mib_is_written_and_read_back_pixel_identical(tmp_path):
    photo = large_photo()
    root = tree(tmp_path / "ilsvrc", {"big.JPEG": photo}, second=photo[::-1].copy())  # one size: read back whole
    res = write(root, tmp_path / "out", "--splits", "val", timeout=120)  # FFCV's default page: a hang
    assert res.returncode == 0, res.stderr[-3000:]
    assert "page 16 MiB" in res.stdout and "big" in res.stdout.split("largest")[1]
    from ffcv.fields.rgb_image import SimpleRGBImageDecoder
    from ffcv.loader import Loader, OrderOption

    loader = Loader(str(tmp_path / "out" / "val.beton"), batch_size=1, num_workers=1, order=OrderOption.SEQUENTIAL,
                    pipelines={"image": [SimpleRGBImageDecoder()], "label": None})
    stored = [image[0].copy() for (image,) in loader]
    for name, pixels in zip((f"{WNIDS[0]}/big.JPEG", f"{WNIDS[1]}/0.JPEG"), stored, strict=True):
        source = np.asarray(Image.open(root / "val" / name).convert("RGB"))
        assert pixels.shape == (1600, 2400, 3) and np.array_equal(pixels, source), name
    written = (tmp_path / "out" / "val.beton").stat().st_size
    estimate = float(res.stdout.split("val: ")[1].split("about ")[1].split(" GB")[0]) * 1e9
    assert written <= estimate + 0.01e9  # the estimate, from the headers alone, does not under-promise


INJECT = """
import os, sys, time
sys.path.insert(0, {root!r})
import gsam.data.betons as betons
load = betons._ImageList.__getitem__
def failing(self, i):
    if self.samples[i][0].endswith("bad.JPEG"):
        open({stamp!r}, "w").write(repr(time.time()))
        {action}
    return load(self, i)
betons._ImageList.__getitem__ = failing
sys.argv = ["write_betons.py"] + sys.argv[1:]
exec(compile(open({script!r}).read(), {script!r}, "exec"), {{"__name__": "__main__", "__file__": {script!r}}})
"""


@needs_ffcv
@pytest.mark.slow  # two write_betons subprocesses: ~10 s
@pytest.mark.parametrize("action, error", [("raise RuntimeError('injected failure')", "RuntimeError: injected failure"),
                                           ("os.kill(os.getpid(), 9)", "exited with signal 9")])
def test_a_failing_writer_worker_stops_the_write_within_seconds(tmp_path, action, error):
    """A worker that raises, or dies without a word, while writing a record: the script exits 1 within seconds
    with the worker's error and file, and leaves neither the beton nor its temporary file."""
    rng = np.random.default_rng(1)
    images = {f"{k}.JPEG": rng.integers(0, 256, (24, 32, 3), dtype=np.uint8) for k in range(150)}
    root = tree(tmp_path / "ilsvrc", {**images, "bad.JPEG": images["0.JPEG"]})
    stamp = tmp_path / "failed_at"
    code = INJECT.format(root=str(ROOT), script=str(ROOT / "scripts" / "write_betons.py"), action=action,
                         stamp=str(stamp))
    out = tmp_path / "out"
    cmd = [sys.executable, "-c", code, "--imagenet", str(root), "--out", str(out), "--workers", "2", "--no-progress",
           "--splits", "val"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180)  # a hang fails here
    ended = time.time()
    assert res.returncode == 1, res.stdout[-2000:] + res.stderr[-2000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {out / 'val.beton'}: writer worker") and "bad.JPEG" in last and error in last, last
    assert ended - float(stamp.read_text()) < 15  # from the failure to the exit (0.1 s polls, 5 s grace to stop)
    assert sorted(p.name for p in out.iterdir()) == []


@pytest.mark.slow  # write_betons.py in a subprocess (imports torch): a few seconds
def test_an_image_ffcv_cannot_store_is_refused_up_front(tmp_path):
    """A side over 65,535 px does not fit FFCV's uint16 width: refused by name and size before anything is
    written (a real 66,000 x 4 PNG: 1 MB of pixels, read from its header)."""
    root = tree(tmp_path / "ilsvrc", {})
    save(root / "val" / WNIDS[0] / "banner.png", np.zeros((4, 66000, 3), dtype=np.uint8))
    res = write(root, tmp_path / "out", "--splits", "val", timeout=120)
    assert res.returncode == 2
    line = res.stderr.strip()
    assert "\n" not in line and "banner.png: 66000x4 px, too large to store" in line and "65535" in line, line
    assert not list((tmp_path / "out").glob("*.beton*"))


def test_estimate_only_writes_nothing_and_a_full_disk_is_refused(tmp_path, monkeypatch, capsys):
    wb = load_script("write_betons")
    root = tree(tmp_path / "ilsvrc", {"big.JPEG": large_photo(1200, 800)})
    out = tmp_path / "out"
    assert wb.main(["--imagenet", str(root), "--out", str(out), "--workers", "1", "--estimate-only"]) == 0
    printed = capsys.readouterr().out
    assert "val: 2 images, about" in printed and "largest " + str(root / "val" / WNIDS[0] / "big.JPEG") in printed
    assert not list(out.iterdir())
    usage = wb.shutil.disk_usage(out)
    monkeypatch.setattr(wb.shutil, "disk_usage", lambda p: usage._replace(free=10_000_000))
    assert wb.main(["--imagenet", str(root), "--out", str(out), "--workers", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"--out {out}: 0.01 GB free, the betons need about" in err, err


@needs_ffcv
def test_the_stored_size_and_page_follow_ffcvs_resizer():
    """The plan's stored sizes are FFCV's (``resizer``: longer side to max_resolution, truncated), so the
    page fits the largest record exactly; a 2400x1600 val image needs a 16 MiB page, a 400 px train one 8 MiB."""
    from ffcv.fields.rgb_image import resizer

    from gsam.data.beton_sizes import page_size_for, stored_size

    for w, h in [(2400, 1600), (401, 17), (333, 500), (4000, 20), (20, 20)]:
        ref = resizer(np.zeros((h, w, 3), np.uint8), 400).shape
        sw, sh = stored_size(np.array([w]), np.array([h]), 400)
        assert (int(sh[0]), int(sw[0])) == ref[:2], (w, h)
    assert page_size_for(2400 * 1600 * 3) == 16 << 20 and page_size_for(400 * 300 * 3) == 8 << 20
