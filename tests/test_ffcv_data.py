"""FFCV betons for real: written by scripts/write_betons.py from the ILSVRC layouts, read back through the
project's loaders; the trainer on data.loader=ffcv. Skipped (with the reason) where FFCV is not installed."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from support import ROOT
from support.marks import needs_ffcv

pytestmark = needs_ffcv
WNIDS = ["n01440764", "n01443537", "n02102040"]
SIZE = 24


def photo_crops(n):
    """n distinct 24x24 crops of scikit-learn's two sample photos (real JPEG content, shipped offline)."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    return [photos[i % 2][20 * i:20 * i + SIZE, 30 * i:30 * i + SIZE] for i in range(n)]


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory):
    """train/<wnid>/ (3 classes x 5, one corrupt file), val/ flat with a devkit, and the pixels of each file."""
    root = tmp_path_factory.mktemp("ilsvrc")
    pixels = {}
    crops = iter(photo_crops(24))
    for c, wnid in enumerate(WNIDS):
        for k in range(5):
            path = root / "train" / wnid / f"{wnid}_{k}.JPEG"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(next(crops)).save(path, quality=95)
            pixels[str(path)] = (np.asarray(Image.open(path).convert("RGB")), c)
    bad = root / "train" / WNIDS[1] / "broken.JPEG"
    good = (root / "train" / WNIDS[1] / f"{WNIDS[1]}_0.JPEG").read_bytes()
    bad.write_bytes(good[: len(good) // 3])  # a truncated JPEG, as left by an interrupted copy
    # flat val + devkit: ILSVRC2012_IDs are the devkit's own numbering, not the sorted-wnid order
    (root / "val").mkdir()
    devkit = root / "devkit" / "data"
    devkit.mkdir(parents=True)
    ids = {WNIDS[0]: 3, WNIDS[1]: 1, WNIDS[2]: 2}
    labels = [2, 0, 1, 2, 0, 1]  # sorted-wnid class of val images 1..6
    for n, c in enumerate(labels, start=1):
        path = root / "val" / f"ILSVRC2012_val_{n:08d}.JPEG"
        Image.fromarray(next(crops)).save(path, quality=95)
        pixels[str(path)] = (np.asarray(Image.open(path).convert("RGB")), c)
    (devkit / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{ids[WNIDS[c]]}\n" for c in labels))
    from scipy.io import savemat

    synsets = np.array([(ids[w], w) for w in WNIDS], dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O")])
    savemat(str(devkit / "meta.mat"), {"synsets": synsets})
    return root, pixels


def start_write(root, out, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "scripts/write_betons.py", "--imagenet", str(root), "--out", str(out),
                             "--workers", "2", "--no-progress", "--val-labels", str(root / "devkit"),
                             "--minival-fraction", "0.2", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def eval_tree(root):
    """4 photos of 427 x 640 (larger than the train default --max-side 400) as train and val JPEGs."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    images = [photos[0], photos[1], photos[0][:, ::-1], photos[1][::-1]]
    for k, img in enumerate(images):
        for split in ("train", "val"):
            path = root / split / WNIDS[k % 2] / f"{k}.JPEG"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.ascontiguousarray(img)).save(path, quality=85)
    return root


@pytest.fixture(scope="module")
def writes(imagenet, tmp_path_factory):
    """The module's three write_betons.py commands, started at once (their interpreters' start-ups and FFCV's
    compilation overlap on the cores): {name: (its --out, its CompletedProcess)}."""
    root, _ = imagenet
    plan = {"raw": (root, tmp_path_factory.mktemp("betons"), ["--write-mode", "raw"]),
            "jpg": (root, tmp_path_factory.mktemp("jpg"), ["--write-mode", "jpg", "--jpeg-quality", "90",
                                                            "--splits", "train", "--minival-fraction", "0"]),
            "eval": (eval_tree(tmp_path_factory.mktemp("photos") / "ilsvrc"), tmp_path_factory.mktemp("eval"),
                     ["--splits", "minival,val", "--minival-fraction", "0.5"])}
    procs = {name: start_write(src, out, *args) for name, (src, out, args) in plan.items()}
    done = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        done[name] = (plan[name][1], subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    return done


def read_all(beton, img_size=SIZE):
    from gsam.data.ffcv_loaders import FFCVLoader

    loader = FFCVLoader(beton, train=False, img_size=img_size, mean=(0.0,) * 3, std=(1.0 / 255,) * 3, batch=4,
                        rank=0, world=1, seed=0, num_workers=1, device=torch.device("cpu"), channels_last=False,
                        min_crop_scale=0.08, crop_pct=1.0, os_cache=False, with_index=True)
    xs, ys, idx = zip(*loader)
    return torch.cat(xs), torch.cat(ys), torch.cat(idx)


@pytest.fixture(scope="module")
def raw_betons(writes):
    out, res = writes["raw"]
    assert res.returncode == 0, res.stderr[-3000:]
    return out, res.stdout


@pytest.mark.slow
def test_a_corrupt_image_is_reported_by_path_and_skipped(raw_betons, imagenet):
    out, stdout = raw_betons
    root, _ = imagenet
    assert f"skipping unreadable image {root / 'train' / WNIDS[1] / 'broken.JPEG'}" in stdout
    side = json.loads((out / "train.json").read_text()) if (out / "train.json").exists() else None
    mini = json.loads((out / "minival.json").read_text())
    skipped = side["skipped"] + mini["skipped"]
    assert [Path(s["path"]).name for s in skipped] == ["broken.JPEG"]


@pytest.mark.slow  # raw_betons: write_betons.py in a subprocess and FFCV's JIT, ~15 s here
def test_raw_betons_read_back_bit_exact_with_their_labels(raw_betons, imagenet):
    out, _ = raw_betons
    _, pixels = imagenet
    for split in ("minival", "val"):
        meta = json.loads((out / f"{split}.json").read_text())
        assert meta["classes"] == WNIDS  # sorted wnids = the standard class order
        x, y, idx = read_all(out / f"{split}.beton")
        assert idx.tolist() == list(range(meta["num_images"]))
        for k in range(len(idx)):
            ref, label = pixels[meta["files"][k]]
            assert int(y[k]) == label
            assert torch.equal(x[k].round().to(torch.uint8).permute(1, 2, 0), torch.from_numpy(ref.copy())), meta["files"][k]


@pytest.mark.slow  # raw_betons: write_betons.py in a subprocess and FFCV's JIT, ~15 s here
def test_flat_val_labels_come_from_the_devkit(raw_betons):
    out, _ = raw_betons
    meta = json.loads((out / "val.json").read_text())
    names = [Path(f).name for f in meta["files"]]
    assert names == [f"ILSVRC2012_val_{n:08d}.JPEG" for n in range(1, 7)]
    _, y, _ = read_all(out / "val.beton")
    assert y.tolist() == [2, 0, 1, 2, 0, 1]


@pytest.mark.slow  # raw_betons: write_betons.py in a subprocess and FFCV's JIT, ~15 s here
def test_minival_is_the_folder_loaders_minival(raw_betons, imagenet):
    from gsam.data.folder import build_folder_loaders

    out, _ = raw_betons
    root, _ = imagenet
    *_, files = build_folder_loaders(root=str(root), train_split="train", val_split=None, img_size=SIZE,
                                     mean=(0,) * 3, std=(1,) * 3, batch=2, eval_batch=4, num_workers=0, rank=0,
                                     world=1, seed=0, minival_fraction=0.2)
    beton_files = json.loads((out / "minival.json").read_text())["files"]
    skipped = {s["path"] for s in json.loads((out / "minival.json").read_text())["skipped"]}
    assert sorted(beton_files) == sorted(f for f in files["minival"] if f not in skipped)


@pytest.mark.slow
def test_a_jpeg_train_beton_is_within_jpeg_tolerance(imagenet, writes):
    from gsam.data.sources import folder_samples

    root, pixels = imagenet
    out, res = writes["jpg"]
    assert res.returncode == 0, res.stderr[-3000:]
    x, y, _ = read_all(out / "train.beton")  # no minival: every readable train file, in folder order
    files = [f for f, _ in folder_samples(root / "train", WNIDS) if Path(f).name != "broken.JPEG"]
    assert len(files) == len(x)
    for k, f in enumerate(files):
        ref = torch.from_numpy(pixels[f][0].copy()).permute(2, 0, 1).float()
        diff = (x[k] - ref).abs().mean().item()
        assert 0 < diff < 8.0, (f, diff)  # re-encoded (not raw), yet within a few grey levels on average
        assert int(y[k]) == pixels[f][1]


def read_stored(beton):
    """Every record's stored pixels, as FFCV decodes them (no crop, no resize; records of one size)."""
    from ffcv.fields.basics import IntDecoder
    from ffcv.fields.rgb_image import SimpleRGBImageDecoder
    from ffcv.loader import Loader, OrderOption

    loader = Loader(str(beton), batch_size=1, num_workers=1, order=OrderOption.SEQUENTIAL,
                    pipelines={"image": [SimpleRGBImageDecoder()], "label": [IntDecoder()]})
    return [image[0].copy() for image, _ in loader]


@pytest.mark.slow
def test_eval_betons_hold_the_original_pixels(writes):
    """With the default (train) options, which resize to 400 px and re-encode 10%: minival and val still
    hold every source JPEG's decoded pixels, at full size."""
    out, res = writes["eval"]
    assert res.returncode == 0, res.stderr[-3000:]
    for split in ("minival", "val"):
        meta = json.loads((out / f"{split}.json").read_text())
        assert meta["options"]["write_mode"] == "raw" and meta["options"]["max_resolution"] is None
        stored = read_stored(out / f"{split}.beton")
        assert len(stored) == len(meta["files"]) == (2 if split == "minival" else 4)
        for f, pixels in zip(meta["files"], stored):
            source = np.asarray(Image.open(f).convert("RGB"))
            assert pixels.shape == source.shape == (427, 640, 3) and np.array_equal(pixels, source), f


@pytest.mark.slow
def test_train_shards_are_disjoint_and_resume_mid_epoch(raw_betons):
    from gsam.data.ffcv_loaders import FFCVLoader

    out, _ = raw_betons
    common = dict(train=True, img_size=16, mean=(0.5,) * 3, std=(0.5,) * 3, batch=2, world=2, seed=3,
                  num_workers=1, device=torch.device("cpu"), channels_last=False, min_crop_scale=0.35, crop_pct=1.0,
                  os_cache=False)
    ranks = [FFCVLoader(out / "train.beton", rank=r, **common) for r in range(2)]
    n = json.loads((out / "train.json").read_text())["num_images"]
    steps = n // 4  # whole global batches of 2 ranks x 2
    for epoch in (0, 1):
        orders = []
        for ld in ranks:
            ld.sampler.set_epoch(epoch)
            orders.append(list(ld.sampler))
            batches = list(ld)
            assert len(batches) == len(ld) == steps and all(x.shape == (2, 3, 16, 16) for x, _ in batches)
            assert all(-1.0 <= x.min() and x.max() <= 1.0 for x, _ in batches)
        assert not set(orders[0]) & set(orders[1])  # disjoint shards
        assert len(orders[0]) == len(orders[1]) == 2 * steps
    ranks[0].sampler.set_epoch(1, start_batch=1)
    assert len(ranks[0]) == steps - 1 and list(ranks[0].sampler) == orders[0][2:]


@pytest.mark.slow
def test_trainer_runs_on_ffcv_betons(tmp_path, compose, demo_root, demo_betons):
    from gsam.run.experiment import run

    cfg = compose("+experiment=demo_gsam", f"output_dir={tmp_path / 'run'}", f"data.root={demo_root}",
                  f"data.betons={demo_betons}", "data.loader=ffcv", "data.num_workers=1", "train.max_steps=3",
                  "data.batch_size=32", "train.progress=false", "logger.wandb.mode=disabled")
    results = run(cfg)
    assert results["val"]["images"] == 355
    assert json.loads((demo_betons / "train.json").read_text())["num_images"] == 1442
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["step"] == 3 and saved["imagenet"] == results["val"]["top1"]


def test_missing_betons_is_a_config_error(tmp_path, compose):
    from gsam.config.checks import ConfigError
    from gsam.run.experiment import run

    cfg = compose("+experiment=vit_s32_vanilla", f"output_dir={tmp_path}", f"data.betons={tmp_path / 'nope'}",
                  "train.device=cpu", "logger.wandb.mode=disabled", "model.name=vit_tiny_patch16_224")
    with pytest.raises(ConfigError, match="data.betons=.*write_betons.py.*data.loader=folder"):
        run(cfg)
