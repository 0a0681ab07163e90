"""The embedded demo dataset: scikit-learn's handwritten digits as RGB JPEGs in the ImageNet layout.

1,797 real 8x8 scans (10 classes) ship inside scikit-learn, so the main job runs on a fresh machine
with no download. They are upscaled to ``image_size`` and written as
``root/{train,val}/<class>/<name>.JPEG``, the layout ``scripts/write_betons.py``-style tools and the
ImageFolder loader read for ImageNet; class folders sort in label order (``digit_0`` ... ``digit_9``).
The train/val split is a fixed stratified one (every 5th image of each class goes to val).

The demo writes only into folders it created (``own_folder``): absent or empty ones, which it marks, or its
own from before. A ``data.root`` (``data.betons``, ``data.robustness_root``) that holds anything else, a
user's ImageNet for instance, is refused before anything is written there.

The small-scale study (scripts/studies/small_scale_study.py) writes a copy with two options:
- ``minival=True`` moves every 5th train image of each class to ``root/minival`` (a clean, stratified 20%
  of train) BEFORE any noise, as a validation split to choose hyper-parameters on, so val can stay the
  test set that is reported and is never used for a choice;
- ``label_noise`` > 0 files that share of the remaining TRAIN images under another class, drawn uniformly
  from the nine wrong ones (symmetric noise, the setting of Foret et al. 2021 §4); minival and val keep
  their true labels. The noise is a fixed draw (``noise_seed``), the same for every training seed;
  ``root/noisy_labels.json`` lists every relabelled file with its true and its given class.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

VERSION = 1
MARKER = ".gsam-demo"  # in every folder the demo created: only there does it write


def own_folder(folder: str | Path, key: str, legacy=lambda folder: False) -> Path:
    """``folder``, made the demo's to write into: created here (absent or empty: marked with MARKER) or marked
    before (``legacy(folder)``: one written before the marker existed). ValueError naming ``key`` for anything
    else: the demo never writes into a folder it did not create (it added digit_0..digit_9 to a user's
    ImageNet train/ and val/ when data.root pointed there)."""
    folder = Path(folder)
    if (folder / MARKER).is_file() or (folder.is_dir() and legacy(folder)):
        return folder
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ValueError(f"{key}={folder}: a folder the demo did not create (no {MARKER} in it); the demo writes "
                         f"its data only into its own folders: leave {key} at its default or give a new folder")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text("written by the gsam demo (data/demo.py); it writes only into folders holding this\n")
    return folder


def noisy_targets(targets: np.ndarray, fraction: float, seed: int, num_classes: int = 10) -> np.ndarray:
    """``targets`` with round(fraction * n) of them, chosen at random, moved to a uniformly drawn other class."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"label_noise must be in [0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    out = targets.copy()
    flip = rng.choice(len(targets), size=int(round(fraction * len(targets))), replace=False)
    # an offset in 1..K-1 never lands on the true class, and each wrong class is equally likely
    out[flip] = (targets[flip] + rng.integers(1, num_classes, size=len(flip))) % num_classes
    return out


def _split(labels: np.ndarray, minival: bool) -> list[str]:
    """The fixed stratified split: the 5th, 10th, ... image of each class goes to val; with ``minival``, the
    5th, 10th, ... of each class's remaining images to minival."""
    counts: dict[tuple[str, int], int] = {}
    splits = []
    for label in labels.tolist():
        split = "val" if _nth(counts, ("all", label)) % 5 == 4 else "train"
        if split == "train" and minival and _nth(counts, ("train", label)) % 5 == 4:
            split = "minival"
        splits.append(split)
    return splits


def _nth(counts: dict, key) -> int:
    """How many times ``key`` was seen before (and count this one)."""
    k = counts.get(key, 0)
    counts[key] = k + 1
    return k


def write_demo_dataset(root: str | Path, image_size: int = 32, quality: int = 95, label_noise: float = 0.0,
                       noise_seed: int = 0, minival: bool = False) -> Path:
    """Write the dataset once; a later call with the same parameters returns at once."""
    root = own_folder(root, "data.root", legacy=lambda folder: (folder / "demo.json").is_file())
    stamp = root / "demo.json"
    meta = {"version": VERSION, "image_size": image_size, "quality": quality}
    if label_noise or minival:  # absent by default: the stamps of copies written before the options stay valid
        meta.update(label_noise=label_noise, noise_seed=noise_seed, minival=minival)
    if stamp.exists():
        if json.loads(stamp.read_text()) == meta:
            return root
        for split in ("train", "minival", "val"):  # our own older copy: a relabelled file must not stay in its old folder
            shutil.rmtree(root / split, ignore_errors=True)
    from sklearn.datasets import load_digits

    digits = load_digits()
    splits = _split(digits.target, minival)
    given = digits.target.copy()
    train = np.array([s == "train" for s in splits])
    given[train] = noisy_targets(digits.target[train], label_noise, noise_seed)
    relabelled = []
    for i, (img, split) in enumerate(zip(digits.images, splits)):
        folder = root / split / f"digit_{given[i]}"
        folder.mkdir(parents=True, exist_ok=True)
        gray = (np.asarray(img) * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
        pic = Image.fromarray(gray, mode="L").resize((image_size, image_size), Image.BICUBIC).convert("RGB")
        pic.save(folder / f"digits_{i:05d}.JPEG", quality=quality)
        if given[i] != digits.target[i]:
            relabelled.append({"file": f"digits_{i:05d}.JPEG", "true": int(digits.target[i]), "given": int(given[i])})
    if label_noise:
        (root / "noisy_labels.json").write_text(json.dumps(relabelled, indent=1))
    stamp.write_text(json.dumps(meta))
    return root
