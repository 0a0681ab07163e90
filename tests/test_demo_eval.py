"""data/demo_eval.py: the demo's V2/R/C stand-ins, written in the real layouts from a few val digits."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter, ImageOps

from gsam.data.demo_eval import R_CLASSES, SEVERITY, write_demo_eval_sets
from gsam.data.sources import corruption_folders

SIZE = 16


@pytest.fixture
def small_demo(demo_root, tmp_path):
    """Two images of each of the classes digit_0 and digit_1 (labels 0 and 1), copied from the demo's val."""
    root = tmp_path / "demo"
    for cls in ("digit_0", "digit_1"):
        (root / "val" / cls).mkdir(parents=True)
        for path in sorted((Path(demo_root) / "val" / cls).iterdir())[:2]:
            shutil.copy(path, root / "val" / cls / path.name)
    return root


def pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float32)


def test_the_stand_ins_have_the_real_layouts_and_their_transformations(small_demo, tmp_path):
    out = write_demo_eval_sets(small_demo, tmp_path / "eval", SIZE)
    names = sorted(p.stem + ".JPEG" for p in (small_demo / "val" / "digit_0").iterdir())
    # V2: class-index folders (ImageNet-V2's layout), every val image once
    assert sorted(p.name for p in (out / "v2").iterdir()) == ["0", "1"]
    assert sorted(p.name for p in (out / "v2" / "0").iterdir()) == names
    # R: only the classes of R_CLASSES (a subset, as ImageNet-R's 200 of 1000), by wnid-style folder name
    assert 0 in R_CLASSES and 1 not in R_CLASSES
    assert [p.name for p in (out / "r").iterdir()] == ["digit_0"]
    # C: <corruption>/<severity 1..5>/<class>/, as the loaders find them
    found = corruption_folders(out / "c")
    assert sorted(found) == sorted(SEVERITY) and all(list(sev) == [1, 2, 3, 4, 5] for sev in found.values())
    for sev in found.values():
        for folder in sev.values():
            assert sorted(p.name for p in folder.iterdir()) == ["digit_0", "digit_1"]
    for path in out.rglob("*.JPEG"):
        assert Image.open(path).size == (SIZE, SIZE)  # the evaluation size: C is only centre-cropped, never resized

    with Image.open(small_demo / "val" / "digit_0" / names[0]) as im:
        clean = im.convert("RGB").resize((SIZE, SIZE), Image.BICUBIC)
    # R: a rendition, the colour-inverted digit with thickened strokes (up to JPEG's error)
    rendition = np.asarray(ImageOps.invert(clean.filter(ImageFilter.MaxFilter(3))), dtype=np.float32)
    assert np.abs(pixels(out / "r" / "digit_0" / names[0]) - rendition).mean() < 4
    # C: contrast falls with the severity, by the factors of SEVERITY["contrast"]
    spread = [pixels(out / "c" / "contrast" / str(s) / "digit_0" / names[0]).std() for s in range(1, 6)]
    base = np.asarray(clean, dtype=np.float32).std()
    assert spread == sorted(spread, reverse=True)
    assert np.allclose(spread, [base * f for f in SEVERITY["contrast"]], rtol=0.15)
    # noise grows with the severity: the distance from the clean image
    dist = [np.abs(pixels(out / "c" / "gaussian_noise" / str(s) / "digit_0" / names[0]) - np.asarray(clean)).mean()
            for s in range(1, 6)]
    assert dist == sorted(dist) and dist[0] > 2


def test_a_second_call_reuses_the_sets_and_a_new_size_rewrites_them(small_demo, tmp_path):
    out = tmp_path / "eval"
    write_demo_eval_sets(small_demo, out, SIZE)
    stamp = json.loads((out / "demo_eval.json").read_text())
    assert stamp["image_size"] == SIZE and stamp["source"] == str(small_demo.resolve())
    image = next((out / "v2" / "0").iterdir())
    image.write_bytes(b"not rewritten")  # the stamp matches: nothing is written again
    write_demo_eval_sets(small_demo, out, SIZE)
    assert image.read_bytes() == b"not rewritten"
    write_demo_eval_sets(small_demo, out, 12)  # another evaluation size: every file again
    assert Image.open(image).size == (12, 12)
    assert json.loads((out / "demo_eval.json").read_text())["image_size"] == 12
