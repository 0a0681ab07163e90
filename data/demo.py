"""The embedded demo dataset: scikit-learn's handwritten digits as RGB JPEGs in the ImageNet layout.

1,797 real 8x8 scans (10 classes) ship inside scikit-learn, so the main job runs on a fresh machine
with no download. They are upscaled to ``image_size`` and written as
``root/{train,val}/<class>/<name>.JPEG``, the layout ``scripts/write_betons.py``-style tools and the
ImageFolder loader read for ImageNet; class folders sort in label order (``digit_0`` ... ``digit_9``).
The train/val split is a fixed stratified one (every 5th image of each class goes to val).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

VERSION = 1


def write_demo_dataset(root: str | Path, image_size: int = 32, quality: int = 95) -> Path:
    """Write the dataset once; a later call with the same parameters returns at once."""
    root = Path(root)
    stamp = root / "demo.json"
    meta = {"version": VERSION, "image_size": image_size, "quality": quality}
    if stamp.exists() and json.loads(stamp.read_text()) == meta:
        return root
    from sklearn.datasets import load_digits

    digits = load_digits()
    counts: dict[int, int] = {}
    for i, (img, label) in enumerate(zip(digits.images, digits.target)):
        label = int(label)
        k = counts.get(label, 0)
        counts[label] = k + 1
        split = "val" if k % 5 == 4 else "train"
        folder = root / split / f"digit_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        gray = (np.asarray(img) * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
        pic = Image.fromarray(gray, mode="L").resize((image_size, image_size), Image.BICUBIC).convert("RGB")
        pic.save(folder / f"digits_{i:05d}.JPEG", quality=quality)
    stamp.write_text(json.dumps(meta))
    return root
