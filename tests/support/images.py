"""Small ILSVRC-layout trees for the beton tests: real JPEG/PNG files written with PIL."""
from __future__ import annotations

import numpy as np
from PIL import Image

WNIDS = ["n01440764", "n01443537"]


def save(path, pixels) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **({"quality": 90} if path.suffix == ".JPEG" else {}))


def small_tree(root, val_images, second=None):
    """train/<wnid>/ with 3 small JPEGs a class, val/<wnid>/ with ``val_images`` ({name: RGB array}) under the
    first class and ``second`` (default: a small JPEG) under the second."""
    rng = np.random.default_rng(0)
    small = lambda: rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)  # noqa: E731
    for wnid in WNIDS:
        for k in range(3):
            save(root / "train" / wnid / f"{k}.JPEG", small())
    save(root / "val" / WNIDS[1] / "0.JPEG", small() if second is None else second)
    for name, pixels in val_images.items():
        save(root / "val" / WNIDS[0] / name, pixels)
    return root


def large_photo(w=2400, h=1600):
    """A smooth image (compresses like a photo) of w x h: 2400x1600 is 11.5 MB of RGB, over FFCV's 8 MiB page."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // w, y * 255 // h, (x + y) % 256], axis=-1).astype(np.uint8)
