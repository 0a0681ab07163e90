"""An ILSVRC-2012-shaped folder tree without ImageNet, for testing and measuring the data path.

    python scripts/make_imagenet_tree.py awkward /tmp/ilsvrc            # ImageNet's odd cases, a few dozen files
    python scripts/make_imagenet_tree.py realistic /tmp/ilsvrc --num 20000 --classes 100

``awkward``: train/<wnid>/ and both val layouts (val/<wnid>/, and val_flat/ with a devkit under devkit/)
holding the cases real ImageNet has: sides from 20 px to 4000 px, aspect ratios up to 20:1, CMYK and
grayscale JPEGs, a PNG named .JPEG, lower- and upper-case extensions, a file that is not an image. Each image
is a smooth field of one class colour plus texture, so a small model learns the classes in a few steps.
``realistic``: N JPEGs (q90) whose sizes follow ``SIZES``, an assumed ImageNet-like mix (most images about
500x375, a tail up to 3000 px), cut from scikit-learn's sample photos so they compress like photos.
"""
from __future__ import annotations

import argparse
import zlib
import sys
from pathlib import Path

import numpy as np
from PIL import Image

# (share, (width, height) choices): an assumption about ImageNet's sizes, not a measurement (docs/data.md)
SIZES = [(0.70, [(500, 375), (375, 500), (500, 333), (333, 500)]),
         (0.20, [(300, 225), (400, 300), (250, 250), (200, 150)]),
         (0.08, [(800, 600), (1024, 768), (1200, 900)]),
         (0.02, [(2400, 1600), (1600, 2400), (3000, 2000)])]
WNIDS = ["n01440764", "n01443537", "n01484850"]
COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200)]
# the awkward files of each split: (name, width, height, mode, format); every class gets each of them
AWKWARD = [("tiny.JPEG", 20, 20, "RGB", "JPEG"), ("wide.JPEG", 1000, 50, "RGB", "JPEG"),
           ("tall.jpeg", 40, 800, "RGB", "JPEG"), ("cmyk.JPEG", 300, 200, "CMYK", "JPEG"),
           ("gray.JPEG", 200, 300, "L", "JPEG"), ("png_named.JPEG", 160, 120, "RGB", "PNG"),
           ("plain.JPEG", 500, 375, "RGB", "JPEG"), ("upper.JPEG", 375, 500, "RGB", "JPEG")]
HUGE = ("huge.JPEG", 4000, 3000, "RGB", "JPEG")  # one per split: over FFCV's default 8 MiB page (36 MB of RGB)


def class_image(c: int, w: int, h: int, seed: int) -> np.ndarray:
    """Class colour + a smooth random texture: the class is in the mean colour, as a model can learn."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, 2)
    texture = 30 * np.sin(x / max(w, 1) * 6 + phase[0])[..., None] * np.cos(y / max(h, 1) * 6 + phase[1])[..., None]
    return np.clip(np.array(COLOURS[c], np.float32) + texture + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)


def save(path: Path, pixels: np.ndarray, mode: str, fmt: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(pixels)
    im = im.convert(mode) if mode != "RGB" else im
    im.save(path, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))


def awkward(root: Path) -> Path:
    """The awkward tree (see the module docstring). val_flat/ holds the same val images, named
    ILSVRC2012_val_<n>.JPEG, labelled by devkit/data/{ILSVRC2012_validation_ground_truth.txt, meta.mat}."""
    root = Path(root)
    devkit_ids = {w: i for w, i in zip(WNIDS, (3, 1, 2))}  # the devkit's own class ids, not the sorted order
    truth, n = [], 0
    for split, copies in (("train", 4), ("val", 1)):
        for c, wnid in enumerate(WNIDS):
            for k in range(copies):
                for name, w, h, mode, fmt in AWKWARD + ([HUGE] if c == 0 and k == 0 else []):
                    pixels = class_image(c, w, h, seed=zlib.crc32(f"{split}{c}{k}{name}".encode()))
                    save(root / split / wnid / f"{k}_{name}", pixels, mode, fmt)
                    if split == "val":
                        n += 1
                        save(root / "val_flat" / f"ILSVRC2012_val_{n:08d}.JPEG", pixels, mode, fmt)
                        truth.append(devkit_ids[wnid])
        (root / split / WNIDS[1] / "notes.txt").write_text("not an image\n")
        (root / split / WNIDS[2] / "not_an_image.JPEG").write_bytes(b"<html>404 Not Found</html>\n")
    devkit = root / "devkit" / "data"
    devkit.mkdir(parents=True, exist_ok=True)
    (devkit / "ILSVRC2012_validation_ground_truth.txt").write_text("".join(f"{i}\n" for i in truth))
    from scipy.io import savemat

    synsets = np.array([(i, w) for w, i in devkit_ids.items()], dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O")])
    savemat(str(devkit / "meta.mat"), {"synsets": synsets})
    return root


def realistic(root: Path, num: int, classes: int, val_per_class: int = 2, seed: int = 0, variants: int = 4) -> Path:
    """``num`` train JPEGs over ``classes`` wnid folders and ``val_per_class`` val JPEGs a class, sizes drawn
    from ``SIZES``. Cheap: ``variants`` JPEGs (q90) per size are encoded once, crops of scikit-learn's two sample
    photos resized so that they compress like photos, and each file is a copy of one of them."""
    import io

    from sklearn.datasets import load_sample_images

    photos = [Image.fromarray(p) for p in load_sample_images().images]
    rng = np.random.default_rng(seed)
    encoded = {}
    for _, group in SIZES:
        for w, h in group:
            for v in range(variants):
                x, y = rng.integers(0, 80, 2)
                buf = io.BytesIO()
                photos[v % 2].crop((int(x), int(y), int(x) + 560, int(y) + 347)).resize((w, h)).save(buf, "JPEG",
                                                                                                     quality=90)
                encoded[w, h, v] = buf.getvalue()
    shares = np.array([s for s, _ in SIZES])
    for split, count in (("train", num), ("val", classes * val_per_class)):
        for i in range(count):
            group = SIZES[rng.choice(len(SIZES), p=shares / shares.sum())][1]
            w, h = group[rng.integers(len(group))]
            folder = root / split / f"n{i % classes:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{split}_{i:07d}.JPEG").write_bytes(encoded[w, h, int(rng.integers(variants))])
    return Path(root)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=["awkward", "realistic"])
    ap.add_argument("root", type=Path)
    ap.add_argument("--num", type=int, default=20000, help="realistic: train images")
    ap.add_argument("--classes", type=int, default=100, help="realistic: class folders")
    args = ap.parse_args(argv)
    if args.kind == "awkward":
        awkward(args.root)
    else:
        realistic(args.root, args.num, args.classes)
    print(f"{args.root}: {sum(1 for p in args.root.rglob('*') if p.is_file())} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
