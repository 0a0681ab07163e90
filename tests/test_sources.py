"""The on-disk layouts of ILSVRC-2012 val, V2 and C: labels and errors."""
import pytest
from PIL import Image

from gsam.data.sources import corruption_folders, val_samples, v2_samples

WNIDS = ["n01440764", "n01443537", "n02102040"]


def jpeg(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4)).save(path)


def test_flat_val_with_kaggles_solution_csv(tmp_path):
    for n in (1, 2, 3):
        jpeg(tmp_path / "val" / f"ILSVRC2012_val_{n:08d}.JPEG")
    (tmp_path / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\n"
        "ILSVRC2012_val_00000002,n02102040 10 20 30 40 n02102040 1 2 3 4\n"
        "ILSVRC2012_val_00000001,n01443537 0 0 5 5\n"
        "ILSVRC2012_val_00000003,n01440764 1 1 2 2\n")
    samples = val_samples(tmp_path / "val", WNIDS, tmp_path / "LOC_val_solution.csv")
    assert [(p.rsplit("/", 1)[1], y) for p, y in samples] == [
        ("ILSVRC2012_val_00000001.JPEG", 1), ("ILSVRC2012_val_00000002.JPEG", 2), ("ILSVRC2012_val_00000003.JPEG", 0)]


def test_flat_val_without_ground_truth_says_what_to_pass(tmp_path):
    jpeg(tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(ValueError, match="--val-labels"):
        val_samples(tmp_path / "val", WNIDS)


def test_v2_rejects_folders_that_are_not_class_indices(tmp_path):
    jpeg(tmp_path / "v2" / "n01440764" / "a.jpeg")
    with pytest.raises(ValueError, match="not a class index"):
        v2_samples(tmp_path / "v2", 1000)
    with pytest.raises(FileNotFoundError, match="eval.sets.mine.path"):  # the key that names the folder
        v2_samples(tmp_path / "missing", 1000, "eval.sets.mine.path")


def test_c_finds_corruptions_and_severities(tmp_path):
    for c, s in [("fog", 1), ("fog", 5), ("snow", 2)]:
        jpeg(tmp_path / "c" / c / str(s) / WNIDS[0] / "a.JPEG")
    (tmp_path / "c" / "README.txt").write_text("not a corruption")
    found = corruption_folders(tmp_path / "c")
    assert {c: list(s) for c, s in found.items()} == {"fog": [1, 5], "snow": [2]}
