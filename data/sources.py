"""The standard on-disk layouts of ImageNet and its evaluation sets, as lists of (path, label).

- ILSVRC-2012 train: ``train/<wnid>/*.JPEG``; the class index is the position of the wnid in the
  sorted list (the standard 0..999 order, the one timm's pretrained heads and ReaL use).
- ILSVRC-2012 val: either ``val/<wnid>/*.JPEG`` or flat ``val/ILSVRC2012_val_*.JPEG`` with the devkit's
  ground truth (``ILSVRC2012_validation_ground_truth.txt``: the devkit's 1-based ILSVRC2012_IDs, mapped to
  wnids by ``meta.mat``) or Kaggle's ``LOC_val_solution.csv`` (``ImageId,PredictionString``).
- ImageNet-V2: folders ``0``..``999`` named by class index (sorted as *numbers*, not strings).
- ImageNet-R: a subset of the wnid folders (200 classes).
- ImageNet-C: ``<corruption>/<severity>/<wnid>/*.JPEG``.
"""
from __future__ import annotations

import csv
import os
import re
from pathlib import Path

def rgb(image):
    """A PIL image as 8-bit RGB, as both loaders and the beton writer read every image. PIL's ``convert("RGB")``
    clips a 16-bit grey image (PNG mode I;16, or I) at 255, which made it pure white: its values are scaled to
    8 bits here (the high byte, as PIL itself reduces 16-bit colour PNGs)."""
    if image.mode.startswith("I;16") or image.mode == "I":
        import numpy as np
        from PIL import Image

        grey = (np.asarray(image).astype(np.int64).clip(0, 65535) >> 8).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")  # uint8, 2-D: mode L
    return image.convert("RGB")


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
VAL_NAME = re.compile(r"ILSVRC2012_val_(\d{8})")


def _visible(folder: Path, what: str) -> list[Path]:
    """The entries of ``folder``, sorted, without hidden ones (macOS's ``._x.JPEG`` and ``.DS_Store``, which
    hold no image); a folder that cannot be listed is an error naming it."""
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError as e:
        raise ValueError(f"{what}: folder {folder} cannot be read ({e.strerror or e}); fix it or remove it") from None


def _images(folder: Path, what: str = "dataset") -> list[Path]:
    """The image files of ``folder``; a link to a missing file is kept (the loader skips it, naming it, and the
    evaluation's image count shows it)."""
    return [p for p in _visible(folder, what) if (p.is_file() or p.is_symlink()) and p.suffix.lower() in IMAGE_EXTENSIONS]


def _subdirs(root: Path, what: str) -> list[Path]:
    """The sub-folders of ``root``, sorted. A link to nothing is an error naming it: skipping it would drop a
    whole class without a word (val scored on 9 of 10 classes)."""
    found = []
    for p in _visible(root, what):
        if p.is_symlink() and not p.exists():
            raise ValueError(f"{what}: {p} is a link to nothing (-> {os.readlink(p)}); restore it or remove it")
        if p.is_dir():
            found.append(p)
    return found


def _require_dir(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{what}: no such directory: {path}")
    return path


def class_folders(root: Path, what: str = "dataset") -> list[str]:
    """Sorted sub-folder names of ``root`` (the class list)."""
    root = _require_dir(root, what)
    classes = [d.name for d in _subdirs(root, what)]
    if not classes:
        raise FileNotFoundError(f"{what}: {root} has no class sub-folders")
    return classes


def folder_samples(root: Path, classes: list[str], what: str = "dataset") -> list[tuple[str, int]]:
    """(path, index in ``classes``) for every image under ``root/<class>/``, sorted by class then name.
    Folders absent from ``classes`` are an error (they would silently get no label)."""
    root = _require_dir(root, what)
    index = {c: i for i, c in enumerate(classes)}
    samples, empty = [], []
    for d in _subdirs(root, what):
        if d.name not in index:
            raise ValueError(f"{what}: folder {d} is not one of the {len(classes)} known classes")
        images = [(str(p), index[d.name]) for p in _images(d, what)]
        samples += images
        empty += [] if images else [d.name]
    if samples and empty:  # a class with no image would train as a class that never occurs, silently
        raise ValueError(f"{what}: {len(empty)} class folder(s) under {root} hold no images: "
                         f"{', '.join(empty[:5])}{' ...' if len(empty) > 5 else ''} (restore or remove them)")
    if not samples:
        raise FileNotFoundError(f"{what}: no images under {root}")
    return samples


def val_ground_truth(val_labels: Path, classes: list[str]) -> dict[str, int]:
    """{file stem: class index} for a flat val folder, from the devkit or Kaggle's solution CSV."""
    val_labels = Path(val_labels)
    index = {c: i for i, c in enumerate(classes)}
    if val_labels.is_dir():  # the devkit folder (ILSVRC2012_devkit_t12 or its data/)
        data = val_labels / "data" if (val_labels / "data").is_dir() else val_labels
        gt, meta = data / "ILSVRC2012_validation_ground_truth.txt", data / "meta.mat"
        for f in (gt, meta):
            if not f.is_file():
                raise FileNotFoundError(f"--val-labels: the devkit has no {f}")
        from scipy.io import loadmat

        synsets = loadmat(str(meta), squeeze_me=True)["synsets"]
        id_to_wnid = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets}
        ids = [int(line) for line in gt.read_text().split()]
        return {f"ILSVRC2012_val_{i + 1:08d}": index[id_to_wnid[k]] for i, k in enumerate(ids)}
    if val_labels.suffix == ".csv":
        with open(val_labels, newline="") as f:
            return {row["ImageId"]: index[row["PredictionString"].split()[0]] for row in csv.DictReader(f)}
    raise ValueError(f"--val-labels: {val_labels} is neither the devkit folder nor LOC_val_solution.csv")


def val_samples(root: Path, classes: list[str], val_labels: Path | None = None) -> list[tuple[str, int]]:
    """ILSVRC-2012 val in either layout (see the module docstring)."""
    root = _require_dir(root, "val")
    if _subdirs(root, "val"):
        return folder_samples(root, classes, "val")
    if val_labels is None:
        raise ValueError(f"val: {root} is flat (no <wnid>/ folders); pass the devkit ground truth (--val-labels)")
    truth = val_ground_truth(val_labels, classes)
    samples = []
    for p in _images(root, "val"):
        if p.stem not in truth:
            raise ValueError(f"val: {p.name} has no entry in {val_labels}")
        samples.append((str(p), truth[p.stem]))
    return samples


def real_index(path: str) -> int | None:
    """Position of a val image in ReaL's list (file ``ILSVRC2012_val_00000001`` is entry 0)."""
    m = VAL_NAME.search(Path(path).name)
    return int(m.group(1)) - 1 if m else None


def v2_samples(root: Path, num_classes: int, what: str = "ImageNet-V2") -> list[tuple[str, int]]:
    """ImageNet-V2: the folder name *is* the class index (a string sort would scramble 10 < 2). ``what``: the
    config key that names ``root``, for the errors."""
    root = _require_dir(root, what)
    samples = []
    for d in sorted(_subdirs(root, what), key=lambda d: int(d.name) if d.name.isdigit() else -1):
        if not d.name.isdigit() or not 0 <= int(d.name) < num_classes:
            raise ValueError(f"{what}: folder {d} is not a class index 0..{num_classes - 1} "
                             "(expected the imagenetv2-*-format-val layout)")
        samples += [(str(p), int(d.name)) for p in _images(d, what)]
    if not samples:
        raise FileNotFoundError(f"{what}: no images under {root}")
    return samples


def subset_samples(root: Path, classes: list[str], what: str) -> tuple[list[tuple[str, int]], list[int]]:
    """A class subset in wnid folders (ImageNet-R/-A): samples labelled by position within the subset,
    and the subset's indices into ``classes`` (the logit columns to keep)."""
    subset = class_folders(root, what)
    missing = [w for w in subset if w not in classes]
    if missing:
        raise ValueError(f"{what}: {len(missing)} folders are not training classes, e.g. {missing[:3]}")
    return folder_samples(root, subset, what), [classes.index(w) for w in subset]


def corruption_folders(root: Path, what: str = "ImageNet-C") -> dict[str, dict[int, Path]]:
    """{corruption: {severity: folder}} found under an ImageNet-C root (``what``: its config key, for the errors)."""
    root = _require_dir(root, what)
    found = {}
    for c in _subdirs(root, what):
        sev = {int(s.name): s for s in _subdirs(c, what) if s.name.isdigit()}
        if sev:
            found[c.name] = dict(sorted(sev.items()))
    if not found:
        raise FileNotFoundError(f"{what}: no <corruption>/<severity>/ folders under {root}")
    return found
