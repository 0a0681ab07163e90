"""Issue 31's minor items: each a traceback, an unclear line or a silent acceptance before; now one line naming
the key, file or folder, or a fix. In process and at the smallest size: a config error costs a composition."""
import errno
import json
import re
import signal

import numpy as np
import pytest
import torch
from PIL import Image

from gsam.config.checks import ConfigError
from support.inproc import run_argv, run_main

# -- sidecars ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, says", [("{not json", "its JSON does not parse"),
                                        ('["a", "b"]', "a JSON list, not an object"),
                                        ('{"classes": "ab", "options": {}}', "'classes' is str")])
def test_a_broken_sidecar_is_named(tmp_path, text, says):
    """Invalid JSON (the error named no file) or the wrong shape (AttributeError)."""
    from gsam.data.betons import read_sidecar

    (tmp_path / "train.json").write_text(text)
    with pytest.raises(ValueError, match="^" + re.escape(f"{tmp_path / 'train.json'}: not a sidecar")) as e:
        read_sidecar(tmp_path / "train.beton")
    assert says in str(e.value) and "\n" not in str(e.value)


# -- config values --------------------------------------------------------------------------------------------------

def test_img_size_zero_is_refused(tmp_path, demo_root):
    """data.img_size=0 ended in PIL's traceback ("height and width must be > 0") from inside the loader."""
    res = run_main("train.py", tmp_path / "run", demo_root, "data.img_size=0")
    assert res.returncode == 2 and res.stderr.strip() == ("error: data.img_size=0: expected an integer >= 1 (the "
                                                          "side of the square images the model sees)"), res.stderr


def test_an_output_dir_name_over_255_bytes_is_one_line(tmp_path, demo_root):
    """The output-folder check itself raised OSError (File name too long)."""
    out = tmp_path / ("x" * 300)
    res = run_main("train.py", out, demo_root)
    assert res.returncode == 2, res.stderr[-2000:]
    assert res.stderr.strip() == f"error: output_dir={out}: File name too long (a folder name over 255 bytes)"


def test_an_unset_environment_variable_is_named(tmp_path, demo_root, monkeypatch):
    """``${oc.env:VAR}`` unset: in output_dir, Hydra's "error during exception formatting"; elsewhere
    OmegaConf's traceback where the key was first read."""
    monkeypatch.delenv("GSAM_R4_UNSET", raising=False)
    res = run_main("train.py", tmp_path / "run", demo_root, "optimizer.lr=${oc.env:GSAM_R4_UNSET}")
    assert res.returncode == 2 and res.stderr.strip() == ("error: optimizer.lr: Environment variable "
                                                          "'GSAM_R4_UNSET' not found; set it, or override "
                                                          "optimizer.lr"), res.stderr
    res = run_main("train.py", str(tmp_path / "${oc.env:GSAM_R4_UNSET}"), demo_root)
    assert res.returncode == 2 and res.stderr.strip().startswith("error: output_dir: Environment variable "
                                                                 "'GSAM_R4_UNSET' not found"), res.stderr


def test_a_group_that_reads_another_groups_key_is_named(tmp_path):
    """``+experiment=demo_vanilla data=imagenet``: the demo's eval sets read ${data.robustness_root}, which
    data=imagenet does not define (a raw InterpolationKeyError once the data was built). Now refused first."""
    from support import ROOT

    for split in ("train", "val"):  # a one-class folder set, so that the old code reached the eval sets
        (tmp_path / "data" / split / "n01440764").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "data" / split / "n01440764" / "0.JPEG")
    argv = [str(ROOT / "train.py"), "+experiment=demo_vanilla", "data=imagenet", f"output_dir={tmp_path / 'run'}",
            "data.loader=folder", f"data.root={tmp_path / 'data'}", "data.num_classes=1", "data.num_workers=0",
            "data.batch_size=1", "logger.wandb.mode=disabled", "train.progress=false"]
    res = run_argv("train.py", argv)
    assert res.returncode == 2, res.stderr[-2000:]
    assert res.stderr.strip() == ("error: eval.sets.v2.path: Interpolation key 'data.robustness_root' not found; a key "
                                  "that the config groups chosen do not define: choose the group that defines it, or "
                                  "set it with ++KEY=VALUE"), res.stderr


# -- resume across methods, a read-only checkpoints/ ---------------------------------------------------------------

def test_allow_changes_from_sam_to_gsam_resumes(compose):
    """train.resume=allow_changes from a SAM checkpoint to GSAM: KeyError 'alpha' (SAM keeps none). The base
    optimizer's momentum and the step counters carry over, GSAM's alpha is the config's."""
    from gsam.optim.factory import build_optimizer
    from gsam.run.resume import config_changes, load_optimizer

    sam_cfg, gsam_cfg = compose("+experiment=demo_gsam", "sam=sam"), compose("+experiment=demo_gsam")
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    sam = build_optimizer(model, sam_cfg.optimizer, sam_cfg.sam)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    sam.base_optimizer.step()  # the base optimizer's moments, as after a step
    moments = {k: v.clone() for k, v in sam.base_optimizer.state[model.weight].items()}
    saved = sam.state_dict()
    saved["sharpness"]["steps_taken"] = 7
    gsam = build_optimizer(model, gsam_cfg.optimizer, gsam_cfg.sam)
    changes = config_changes({"sam": dict(sam_cfg.sam)}, {"sam": dict(gsam_cfg.sam)}, sections=("sam",))
    load_optimizer(gsam, saved, changes)
    assert gsam.alpha == gsam_cfg.sam.alpha and gsam.steps_taken == 7
    loaded = gsam.base_optimizer.state[model.weight]
    assert loaded.keys() == moments.keys() and all(torch.equal(loaded[k], v) for k, v in moments.items())


def test_a_read_only_checkpoint_folder_is_one_line(tmp_path, monkeypatch):
    """A read-only checkpoints/: the atomic save's clean-up (removing a temporary file never made) raised EROFS
    over the real error, as a traceback. last.pt is kept."""
    from gsam.state import checkpoint

    last = tmp_path / "last.pt"
    last.write_bytes(b"the previous checkpoint")

    def read_only(*_args, **_kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(checkpoint.torch, "save", read_only)
    monkeypatch.setattr(checkpoint.Path, "unlink", read_only)
    with pytest.raises(checkpoint.CheckpointError) as e:
        checkpoint.atomic_save({"w": torch.zeros(1)}, last)
    assert str(e.value) == (f"cannot write last.pt in {tmp_path} ([Errno 30] Read-only file system); the previous "
                            "one is kept. Make the folder writable (or choose another output_dir) and rerun the same "
                            "command to resume")
    assert last.read_bytes() == b"the previous checkpoint"


# -- ReaL labels --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("real, says", [
    ({"0": [1]}, "expected a list holding one list of class indices per val image, got dict"),
    ([[1], 2], "entry 1 (ILSVRC2012_val_00000002) is int, not a list of class indices"),
    ([[0], [1.5]], "entry 1 (ILSVRC2012_val_00000002) holds 1.5, not a class index in 0..9"),
    ([[0], [-1]], "holds -1, not a class index"),
    ([[0], [10]], "holds 10, not a class index in 0..9"),
    ([[0]], "1 entries, but val holds ILSVRC2012_val_00000002.JPEG (entry 1): the labels of another set?"),
    ("[" * 100_000 + "]" * 100_000, "nested too deep"),
])
def test_a_bad_real_json_is_named(tmp_path, real, says):
    """A real.json of the wrong type or nested too deep (KeyError, TypeError, RecursionError), with fractional,
    negative or out-of-range labels (scored silently: 0.00, 33.33, nan), or shorter than val (reported as files
    "not named ILSVRC2012_val_<n>")."""
    from gsam.evaluation.sets import real_targets

    path = tmp_path / "real.json"
    path.write_text(real if isinstance(real, str) else json.dumps(real))
    with pytest.raises(ConfigError, match="^" + re.escape(f"eval.real_labels={path}: ")) as e:
        real_targets(path, ["ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000002.JPEG"], num_classes=10)
    assert says in str(e.value), str(e.value)


# -- images and classes -------------------------------------------------------------------------------------------

def test_a_class_missing_from_val_is_refused_or_said(tmp_path, capsys):
    """A non-ImageNet val without one of the training classes was scored on the classes present, silently."""
    from gsam.data.folder import check_val_classes

    samples = [("a/0.png", 0), ("c/0.png", 2)]
    with pytest.raises(ValueError, match=r"has no image of 1 of the 3 classes \(b\); val would be scored on the "
                                         r"classes present only: complete it, or set eval.allow_partial=true"):
        check_val_classes(samples, ["a", "b", "c"], tmp_path / "val", allow_partial=False)
    check_val_classes(samples, ["a", "b", "c"], tmp_path / "val", allow_partial=True)
    assert "WARNING" in capsys.readouterr().out


def test_a_16_bit_png_keeps_its_grey_in_both_loaders(tmp_path):
    """PIL's convert("RGB") clips 16-bit grey (mode I;16) at 255: the image became pure white in the folder
    loader and in the betons."""
    from gsam.data.betons import _ImageList
    from gsam.data.folder import ImageList

    path = tmp_path / "grey16.png"
    Image.fromarray(np.full((4, 4), 30000, dtype=np.uint16)).save(path)
    folder_pixels = np.asarray(ImageList([(str(path), 0)], substitute=False)[0][0])
    beton_pixels = _ImageList([(str(path), 0)])[0][0]
    assert folder_pixels.shape == beton_pixels.shape == (4, 4, 3)
    assert (folder_pixels == 30000 >> 8).all() and (beton_pixels == 30000 >> 8).all()


# -- evaluate.py under a signal -------------------------------------------------------------------------------------

def test_evaluate_stopped_by_a_signal_says_so(tmp_path, demo_root, monkeypatch):
    """evaluate.py under TERM/USR2 died without a word (results.json unchanged, but nothing said so). The
    signal is sent to this process once evaluate.py has started; the test's own handler is there in case
    evaluate.py installs none (the old code), so that the signal never ends the test process."""
    import os

    from gsam.run import score

    received = []
    previous = signal.signal(signal.SIGUSR2, lambda *_: received.append(1))
    start = score.start

    def signalled_start(cfg):
        os.kill(os.getpid(), signal.SIGUSR2)
        return start(cfg)

    monkeypatch.setattr(score, "start", signalled_start)
    try:
        res = run_main("evaluate.py", tmp_path / "run", demo_root)
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert res.returncode == 3, res.stderr[-2000:]
    assert res.stderr.strip() == ("[gsam] evaluate.py: stopped by SIGUSR2 before its results were written; rerun the "
                                  "same command")
    assert not received and not (tmp_path / "run" / "results.json").exists()
