"""Issue 31's failures of a run (train.py, evaluate.py and what they build): a beton rewritten under a running
job, train.max_steps=-1, an srun launch whose derived port is taken, an allowed partial ImageNet val without
ReaL counts, and a demo pointed at a user's folder. Each test failed on the code before its fix."""
import os
import re
import shutil
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gsam.config.checks import ConfigError
from gsam.evaluation.sets import _timm_info, build_eval_sets, measure_sets
from support import ROOT
from support.marks import needs_ffcv
from support.cli import run_bounded
from support.evalsets import eval_config
from support.inproc import run_main

IMAGENET = _timm_info("imagenet_synsets.txt").read_text().split()


def tree_listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


# -- 5. train.max_steps=-1 ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("steps", [-1, 0])
def test_a_max_steps_below_one_is_refused(tmp_path, demo_root, steps):
    """-1 ran 0 steps and exited 0 with results.json and a top-k checkpoint at step 0; 0 silently meant the whole
    schedule. Both are refused in one line (null is "no limit")."""
    res = run_main("train.py", tmp_path / "run", demo_root, f"train.max_steps={steps}")
    assert res.returncode == 2, res.stderr[-2000:]
    assert res.stderr.strip() == (f"error: train.max_steps={steps}: expected an integer >= 1 (the step to stop "
                                  "after), or null for the whole schedule")
    assert not (tmp_path / "run" / "results.json").exists()


# -- 6. srun with a taken port -------------------------------------------------------------------------------------

def held_port():
    """A listening socket that accepts and never answers (another program on the port), on a port that some
    SLURM_JOB_ID derives (20000 + id % 20000); (socket, port, job id)."""
    rng = np.random.default_rng(os.getpid())
    for port in rng.permutation(np.arange(20000, 40000))[:200]:
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", int(port)))
        except OSError:
            s.close()
            continue
        s.listen(16)
        return s, int(port), int(port) - 20000
    pytest.skip("no free port in 20000-39999")


def srun_env(rank: int, job: int) -> dict:
    """The variables srun sets for task ``rank`` of 2 (no torchrun), rank 0 on this host."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT", "TORCHELASTIC_RUN_ID")}
    return {**env, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank), "SLURM_NTASKS": "2",
            "SLURM_STEP_NUM_TASKS": "2", "SLURM_JOB_ID": str(job), "SLURM_STEP_ID": "0",
            "MASTER_ADDR": "127.0.0.1", "OMP_NUM_THREADS": "1"}


@pytest.fixture
def restored_environ():
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def test_srun_rank0_on_a_taken_port_names_it(tmp_path, demo_root, restored_environ):
    """Rank 0 used to exit with torch's EADDRINUSE traceback."""
    held, port, job = held_port()
    try:
        os.environ.clear()
        os.environ.update(srun_env(0, job))
        res = run_main("train.py", tmp_path / "run", demo_root, "train.device=cpu")
    finally:
        held.close()
    assert res.returncode == 2, res.stderr[-2000:]
    line = res.stderr.strip()
    assert "\n" not in line and line.startswith(f"error: MASTER_PORT={port}: rank 0 cannot listen on port {port} "
                                                "(address already in use)") and "export MASTER_PORT=" in line, line


@pytest.mark.slow  # train.py in a subprocess: its imports (~5 s) and 10 s of waiting for an answer on the port
def test_srun_rank1_exits_within_seconds_when_the_port_is_taken(tmp_path, demo_root):
    """Rank 1 used to print nothing and wait (still waiting at 90 s) on a port that another program holds: torch's
    client connects, sends its handshake and waits for an answer for ever, whatever its timeout."""
    held, port, job = held_port()
    accepted = []
    import threading

    threading.Thread(target=lambda: [accepted.append(held.accept()) for _ in range(64)], daemon=True).start()
    cmd = [sys.executable, "train.py", "+experiment=demo_gsam", f"output_dir={tmp_path / 'run'}",
           f"data.root={demo_root}", "data.num_workers=0", "train.progress=false", "logger.wandb.mode=disabled",
           "train.device=cpu"]
    start = time.monotonic()
    try:
        res = run_bounded(cmd, timeout=90, env=srun_env(1, job))
    finally:
        held.close()
    assert res.returncode == 2, res.stderr[-2000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: MASTER_PORT={port}: another program holds port {port}") and \
        "export MASTER_PORT=" in last, last
    assert time.monotonic() - start < 60


@pytest.mark.slow  # two processes that import torch (~5 s together)
def test_srun_ranks_still_meet_on_a_free_port(tmp_path):
    """The rendezvous that replaced torch's env:// one for srun launches: two ranks meet and all-reduce."""
    import subprocess

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    code = ("import torch, torch.distributed as dist; from gsam.distributed import init_distributed; "
            "i = init_distributed('cpu'); t = torch.tensor([float(i.rank + 1)]); dist.all_reduce(t); "
            "print(i.rank, i.world, t.item()); dist.destroy_process_group()")
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env={**srun_env(r, 1), "MASTER_PORT": str(port)})
             for r in (1, 0)]  # rank 1 first: it must wait for rank 0
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    assert sorted(o[0].strip() for o in outs) == ["0 2 3.0", "1 2 3.0"]


# -- 7. an allowed partial ImageNet val without ReaL counts ----------------------------------------------------------

class Zeros(torch.nn.Module):
    def forward(self, x):
        return torch.zeros(len(x), 1000)


def test_an_allowed_partial_val_without_real_counts_is_scored(tmp_path, capsys):
    """ImageNet's label space, val partial and allowed, its files not named ILSVRC2012_val_<n> (so no ReaL count):
    the count check formatted the absent ReaL count and raised TypeError, at the end of training (after last.pt)
    and in evaluate.py alike (both measure through measure_sets), with either loader."""
    from gsam.data.folder import eval_loader, eval_transform

    samples = []
    for k, wnid in enumerate(IMAGENET[:3]):
        path = tmp_path / "val" / wnid / f"img{k}.JPEG"
        path.parent.mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(path)
        samples.append((str(path), k))
    cfg = eval_config({"img_size": 8, "eval_batch_size": 4, "num_workers": 0, "crop_pct": 1.0, "root": str(tmp_path)},
                      allow_partial=True, real_labels="timm")
    loader = eval_loader(samples, eval_transform(8, (0.0,) * 3, (1.0,) * 3, 1.0), batch=4, num_workers=0, rank=0,
                         world=1)
    sets = build_eval_sets(cfg, classes=IMAGENET, loaders={"val": loader}, files={"val": [p for p, _ in samples]},
                           loss_fn=None, mean=(0.0,) * 3, std=(1.0,) * 3, rank=0, world=1, notice=print)
    results = measure_sets(sets, Zeros(), torch.device("cpu"), None, False, False)
    assert results["val"]["images"] == 3 and "real_images" not in results["val"]
    assert results["val"]["expected_images"] == {"images": 50_000}
    out = capsys.readouterr().out
    assert "real skipped" in out and "WARNING: val images: 3 images scored, the published set has 50,000" in out


# -- 8. a demo pointed at a user's folder ----------------------------------------------------------------------------

def user_imagenet(root: Path) -> Path:
    for split in ("train", "val"):
        path = root / split / IMAGENET[0] / f"{split}.JPEG"
        path.parent.mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(path)
    return root


def test_the_demo_never_writes_into_a_users_data_folder(tmp_path):
    """``+experiment=demo_vanilla data.root=<a user's ImageNet>`` added digit_0..digit_9 to its train/ and val/
    before exiting 2 on the class count. Now refused before anything is written there."""
    user = user_imagenet(tmp_path / "imagenet")
    before = tree_listing(user)
    res = run_main("train.py", tmp_path / "run", user, "train.max_steps=1")
    assert res.returncode == 2, res.stderr[-2000:]
    assert res.stderr.strip().startswith(f"error: data.root={user}: a folder the demo did not create"), res.stderr
    assert tree_listing(user) == before


def test_the_demo_eval_sets_and_betons_stay_out_of_a_users_folders(tmp_path, demo_root):
    """The same mechanism for the demo's other two folders: data.robustness_root and data.betons (a user's
    betons folder was overwritten with the demo's train.beton and val.beton)."""
    from gsam.data.build import _write_demo_betons
    from gsam.data.demo_eval import write_demo_eval_sets

    user = user_imagenet(tmp_path / "imagenet")
    betons = tmp_path / "betons"
    betons.mkdir()
    (betons / "train.beton").write_bytes(b"a user's beton")
    before = tree_listing(tmp_path)
    with pytest.raises(ValueError, match="^" + re.escape(f"data.robustness_root={user}: a folder the demo did not")):
        write_demo_eval_sets(demo_root, user, 8)
    with pytest.raises(ValueError, match="^" + re.escape(f"data.betons={betons}: a folder the demo did not")):
        _write_demo_betons(Path(demo_root), betons)
    assert tree_listing(tmp_path) == before and (betons / "train.beton").read_bytes() == b"a user's beton"


# -- 4. a beton rewritten under a running job ------------------------------------------------------------------------


def write_train_beton(folder: Path, images: Path, seed: int) -> Path:
    from gsam.data.betons import ORIGINAL_PIXELS, write_beton

    rng = np.random.default_rng(seed)
    samples = []
    for label in range(2):
        for k in range(4):
            path = images / f"c{label}" / f"{k}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)
            samples.append((str(path), label))
    write_beton(folder / "train.beton", samples, ["c0", "c1"], **ORIGINAL_PIXELS, workers=1, keep_files=False,
                progress=False)
    return folder / "train.beton"


@needs_ffcv
@pytest.mark.slow  # FFCV's JIT compiles the loader's pipeline: ~5 s
def test_a_beton_rewritten_under_a_run_stops_it(tmp_path):
    """``cp other/train.beton betons/train.beton`` at step 26 of a run: the run went on reading records at the
    old offsets, exited 0, and val fell from 100% to 33%. The loader now stops at its next batch or epoch with
    one line naming the file (a ConfigError: train.py's exit 2); a touch, or a rename of a different beton over
    it, are told apart by the fingerprint."""
    from gsam.data.ffcv_loaders import build_ffcv_loaders

    beton = write_train_beton(tmp_path / "betons", tmp_path / "a", seed=0)
    other = write_train_beton(tmp_path / "other", tmp_path / "b", seed=1)
    train, *_ = build_ffcv_loaders(betons=str(tmp_path / "betons"), img_size=8, mean=(0.0,) * 3, std=(1.0,) * 3,
                                   batch=4, eval_batch=4, num_workers=1, rank=0, world=1, seed=0,
                                   device=torch.device("cpu"), channels_last=False, min_crop_scale=1.0, crop_pct=1.0,
                                   os_cache=False)
    assert len(list(train)) == 2
    os.utime(beton, ns=(time.time_ns(), time.time_ns() + 10**9))  # a touch: the same bytes, the run goes on
    assert len(list(train)) == 2
    shutil.copyfile(other, beton)  # in place: same name, same inode, other records
    with pytest.raises(ConfigError, match="^" + re.escape(f"{beton}: rewritten while this run reads it")):
        list(train)
