"""The whole data path on a tree with ImageNet's awkward files (scripts/make_imagenet_tree.py awkward): sides
from 20 to 4000 px, 20:1 aspect ratios, CMYK, grayscale, a PNG named .JPEG, a file that is not an image, a flat
val with the devkit. write_betons, a few training steps through each loader, evaluate.py through each loader on
one checkpoint."""
import json

import pytest

from support.background import job
from support.cli import run_script
from support.marks import needs_ffcv
from support.inproc import run_argv

pytestmark = [pytest.mark.slow,  # write_betons, two train.py and two evaluate.py runs
              needs_ffcv]
QUIET = ["+experiment=demo_gsam", "data.name=awkward", "data.num_classes=3", "data.batch_size=32",
         "data.eval_batch_size=250", "data.num_workers=1", "data.minival_fraction=0.01", "eval=default",
         "++data.robustness_root=null", "train.progress=false", "logger.wandb.mode=disabled"]


def run(script, *args, timeout=600):
    """train.py and evaluate.py in this process (support.inproc: what they print and their exit status is all
    that is asserted), the scripts as the user's separate commands."""
    if script not in ("train.py", "evaluate.py"):
        return run_script(script, *args, timeout=timeout)
    res = run_argv(script, [script, *args])
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    return res


@job("awkward")
def _awkward_run(folder, _demo, _lane):
    """The awkward tree and its betons, by the user's two commands."""
    root, betons = folder / "ilsvrc", folder / "betons"
    run("scripts/make_imagenet_tree.py", "awkward", str(root))
    res = run("scripts/write_betons.py", "--imagenet", str(root), "--out", str(betons), "--workers", "2",
              "--no-progress")
    return root, betons, res.stdout


@pytest.fixture(scope="module")
def awkward(background):
    return background.result("awkward")


def test_betons_hold_every_readable_file_and_skip_the_others(awkward):
    root, betons, stdout = awkward
    val = json.loads((betons / "val.json").read_text())
    assert "page 64 MiB" in stdout.split("] val:")[1]  # the 4000x3000 val image: 36 MB of RGB in one record
    assert [s["path"].split("/")[-1] for s in val["skipped"]] == ["not_an_image.JPEG"]
    files = {f.split("/")[-1] for f in val["files"]}
    assert {"0_cmyk.JPEG", "0_gray.JPEG", "0_png_named.JPEG", "0_tiny.JPEG", "0_wide.JPEG", "0_tall.jpeg",
            "0_huge.JPEG"} <= files and "notes.txt" not in files
    assert val["num_images"] == 25 and val["beton"]["page_size"] == 64 << 20


def test_a_flat_val_with_the_devkit_gives_the_class_folder_labels(awkward, tmp_path):
    """val_flat/ holds val's images renamed ILSVRC2012_val_<n>; the devkit's ids are not the sorted order."""
    import torch

    from gsam.data.ffcv_loaders import FFCVLoader

    root, _, _ = awkward
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "train").symlink_to(root / "train")
    (flat / "val").symlink_to(root / "val_flat")
    run("scripts/write_betons.py", "--imagenet", str(flat), "--out", str(tmp_path / "b"), "--splits", "val",
        "--val-labels", str(root / "devkit"), "--workers", "1", "--no-progress")
    loader = FFCVLoader(tmp_path / "b" / "val.beton", train=False, img_size=16, mean=(0,) * 3, std=(1,) * 3, batch=64,
                        rank=0, world=1, seed=0, num_workers=1, device=torch.device("cpu"), channels_last=False,
                        min_crop_scale=0.5, crop_pct=1.0, os_cache=False, with_index=True, raw_only=True)
    labels = [int(v) for _, y, _ in loader for v in y]
    assert labels == [0] * 9 + [1] * 8 + [2] * 8  # numbered class by class (the first class has the huge one)


def test_train_and_evaluate_through_both_loaders(awkward, tmp_path):
    """A few steps through FFCV and through the folder loader; then evaluate.py on the FFCV run's checkpoint
    with each loader. Both read the same original pixels (the val beton stores them as decoded) and drop the
    same unreadable file; they resize differently (OpenCV INTER_AREA vs PIL bilinear, docs/data.md), so a
    prediction near a tie could flip: the bound is one image (100/25 points) of top-1, and 0.05 of mean loss.
    Evaluation batches of 250 (the Table 1 value) with a 4000x3000 val image: FFCV's own decoder asked for 45 GB."""
    root, betons, _ = awkward
    data = [f"data.root={root}", f"data.betons={betons}"]
    ffcv_run, folder_run = tmp_path / "ffcv", tmp_path / "folder"
    run("train.py", *QUIET, *data, "data.loader=ffcv", "train.max_steps=3", f"output_dir={ffcv_run}")
    run("train.py", *QUIET, *data, "data.loader=folder", "train.max_steps=3", f"output_dir={folder_run}")
    assert json.loads((folder_run / "results.json").read_text())["results"]["val"]["images"] == 25
    results = {}
    for loader in ("ffcv", "folder"):
        run("evaluate.py", *QUIET, *data, f"data.loader={loader}", f"output_dir={ffcv_run}")
        results[loader] = json.loads((ffcv_run / "results.json").read_text())["results"]["val"]
    a, b = results["ffcv"], results["folder"]
    assert a["images"] == b["images"] == 25
    assert abs(a["top1"] - b["top1"]) <= 100 / 25 + 1e-9 and abs(a["loss"] - b["loss"]) < 0.05, results
