"""No silent partial evaluation: a class folder that cannot be read is refused naming it (in train as in val),
hidden macOS files are no images, and an ImageNet set whose image count is not the published one is refused
before anything runs, or, when allowed or when images are skipped, recorded and said loudly. Sets of another
label space (the demo, the tests' stand-ins) have no published size: nothing is said."""
import pytest
import torch
from PIL import Image

from gsam.config.checks import ConfigError
from gsam.data.sources import class_folders, folder_samples
from gsam.evaluation.sets import _timm_info, build_eval_sets, check_measured_count
from support.evalsets import eval_config

IMAGENET = _timm_info("imagenet_synsets.txt").read_text().split()


def jpeg(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4)).save(path)


def two_classes(root):
    for c in ("a", "b"):
        jpeg(root / c / "x.JPEG")
    return root


def test_a_val_class_folder_that_is_a_broken_link_is_refused_naming_it(tmp_path):
    val = two_classes(tmp_path / "val")
    (val / "c").symlink_to(tmp_path / "elsewhere" / "c")
    with pytest.raises(ValueError, match=f"val: {val / 'c'} is a link to nothing"):
        folder_samples(val, ["a", "b", "c"], "val")


def test_a_train_class_folder_that_is_a_broken_link_is_refused_naming_it(tmp_path):
    train = two_classes(tmp_path / "train")
    (train / "c").symlink_to(tmp_path / "elsewhere" / "c")
    with pytest.raises(ValueError, match=f"data.root: {train / 'c'} is a link to nothing"):
        class_folders(train, "data.root")


def test_macos_metadata_files_are_not_images(tmp_path):
    root = two_classes(tmp_path / "train")
    (root / "a" / "._x.JPEG").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (root / "a" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    assert [p.split("/")[-1] for p, _ in folder_samples(root, ["a", "b"])] == ["x.JPEG", "x.JPEG"]


def _cfg(**eval_keys):
    return eval_config({"img_size": 8, "eval_batch_size": 4, "num_workers": 0, "crop_pct": 1.0}, **eval_keys)


def _v2(tmp_path, n):
    for k in range(n):
        jpeg(tmp_path / "v2" / str(k % 3) / f"{k}.jpeg")
    return str(tmp_path / "v2")


class Zeros(torch.nn.Module):
    def forward(self, x):
        return torch.zeros(len(x), 1000)


def _build(cfg, classes):
    return build_eval_sets(cfg, classes=classes, loaders={}, files={}, loss_fn=None, mean=(0.0,) * 3,
                           std=(1.0,) * 3, rank=0, world=1, notice=lambda *_: None)


def test_an_imagenet_v2_copy_with_missing_images_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match=r"eval.sets.v2.path=.*holds 5 images, the published set 10,000.*allow_part"):
        _build(_cfg(v2=_v2(tmp_path, 5)), IMAGENET)


def test_an_allowed_partial_set_is_scored_and_its_count_said_loudly(tmp_path, capsys):
    sets = _build(_cfg(v2=_v2(tmp_path, 5), allow_partial=True), IMAGENET)
    metrics = sets["v2"](Zeros(), torch.device("cpu"), None)
    check_measured_count("v2", metrics, sets["v2"].expected)
    assert metrics["images"] == 5 and metrics["expected_images"] == {"images": 10_000}
    assert "WARNING: v2 images: 5 images scored, the published set has 10,000" in capsys.readouterr().out


def test_a_set_of_another_label_space_has_no_published_size(tmp_path, capsys):
    classes = [f"n{i:08d}" for i in range(1000)]  # not ImageNet's wnids: a stand-in, as the demo's digits
    sets = _build(_cfg(v2=_v2(tmp_path, 5)), classes)
    metrics = sets["v2"](Zeros(), torch.device("cpu"), None)
    check_measured_count("v2", metrics, sets["v2"].expected)
    assert "expected_images" not in metrics and capsys.readouterr().out == ""


def test_imagenet_c_counts_every_corruption_and_severity(capsys):
    metrics = {"images": {"fog": {1: 50_000, 2: 49_999}}}
    check_measured_count("c", metrics, {"images": 50_000})
    assert "c/fog/2 images: 49,999 images scored" in capsys.readouterr().out
