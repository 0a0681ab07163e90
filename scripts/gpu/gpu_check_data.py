"""A small ImageNet-layout JPEG set for the GPU kit: ``root/train/<wnid>/*.JPEG`` and ``root/val/<wnid>/*.JPEG``.

Each class is a colour gradient at its own angle with noise and a random rectangle on top, so the images
are learnable, differ from each other and compress like photographs rather than like flat colour.
"""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image


def _write(job: tuple) -> None:
    path, label, classes, seed, (w, h) = job
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = np.pi * label / classes
    ramp = (np.cos(angle) * xx / w + np.sin(angle) * yy / h + rng.uniform(-0.2, 0.2)) % 1.0
    hue = np.array([np.cos(angle), np.sin(angle), np.cos(2 * angle)], np.float32) * 0.5 + 0.5
    img = ramp[..., None] * hue * 200 + rng.normal(0, 12, (h, w, 3))
    x0, y0 = rng.integers(0, w // 2), rng.integers(0, h // 2)
    img[y0:y0 + h // 3, x0:x0 + w // 3] += rng.uniform(-60, 60, 3)
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(path, quality=90)


def write_imagenet_like(root: Path, classes: int, train_per_class: int, val_per_class: int,
                        size: tuple[int, int], workers: int) -> int:
    """Writes the set (once: an existing complete set is kept); returns the number of images."""
    root = Path(root)
    jobs = []
    for c in range(classes):
        wnid = f"n{c:08d}"
        for split, n in (("train", train_per_class), ("val", val_per_class)):
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                path = folder / f"{split}_{c:03d}_{i:05d}.JPEG"
                if not path.exists():
                    jobs.append((path, c, classes, c * 100_003 + i * 7 + (split == "val"), size))
    with ProcessPoolExecutor(max_workers=max(workers, 1)) as pool:
        list(pool.map(_write, jobs, chunksize=16))
    return classes * (train_per_class + val_per_class)
