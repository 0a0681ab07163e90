"""Robustness sets for the embedded demo, in the real layouts of ImageNet-V2, -R and -C, made from the demo's
val digits, so the main job exercises every column of Table 1 without a download.

- ``v2/0..9/``: every val digit again under a small random rotation and shift (a re-drawn test set of
  the same classes; the folder name is the class index, as ImageNet-V2's).
- ``r/digit_<k>/`` for k in 0, 2, 4, 6, 8: "renditions" (colour-inverted, thickened strokes) of half of
  the classes, so the logits must be restricted to a class subset, as ImageNet-R's 200 of 1000.
- ``c/<corruption>/<1..5>/digit_<k>/``: six ImageNet-C corruptions at five severities, applied to the
  val images at the evaluation size (so, as in ImageNet-C, they are only centre-cropped, never resized).

These are stand-ins with the real file layouts, not a robustness benchmark: the numbers show the
pipeline, like the demo itself.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, ImageOps

VERSION = 1
R_CLASSES = (0, 2, 4, 6, 8)
SEVERITY = {  # parameter per severity 1..5
    "gaussian_noise": (0.04, 0.08, 0.12, 0.18, 0.26),  # std of the noise, pixels in [0, 1]
    "impulse_noise": (0.01, 0.03, 0.05, 0.09, 0.15),  # share of salt-and-pepper pixels
    "defocus_blur": (0.5, 0.8, 1.1, 1.5, 2.0),  # Gaussian blur radius in pixels at 32x32
    "contrast": (0.6, 0.45, 0.3, 0.2, 0.12),  # remaining contrast
    "pixelate": (0.8, 0.65, 0.5, 0.4, 0.3),  # downscale factor before upscaling back
    "jpeg_compression": (25, 18, 12, 8, 5),  # JPEG quality
}


def _corrupt(img: Image.Image, name: str, severity: int, rng: np.random.Generator) -> Image.Image:
    p = SEVERITY[name][severity - 1]
    if name == "defocus_blur":
        return img.filter(ImageFilter.GaussianBlur(p))
    if name == "pixelate":
        small = img.resize((max(1, int(img.width * p)),) * 2, Image.BOX)
        return small.resize(img.size, Image.NEAREST)
    if name == "jpeg_compression":
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=p)
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    x = np.asarray(img, dtype=np.float32) / 255
    if name == "gaussian_noise":
        x = x + rng.normal(0, p, x.shape)
    elif name == "impulse_noise":
        mask = rng.random(x.shape[:2])
        x[mask < p / 2] = 0.0
        x[mask > 1 - p / 2] = 1.0
    elif name == "contrast":
        mean = x.mean(axis=(0, 1), keepdims=True)
        x = (x - mean) * p + mean
    return Image.fromarray((np.clip(x, 0, 1) * 255).round().astype(np.uint8))


def write_demo_eval_sets(demo_root: str | Path, out: str | Path, image_size: int) -> Path:
    """Write v2/, r/ and c/ under ``out`` from ``demo_root``/val once; later calls return at once."""
    from .demo import own_folder

    demo_root = Path(demo_root)
    out = own_folder(out, "data.robustness_root", legacy=lambda folder: (folder / "demo_eval.json").is_file())
    stamp = out / "demo_eval.json"
    meta = {"version": VERSION, "image_size": image_size, "source": str(demo_root.resolve())}
    if stamp.exists() and json.loads(stamp.read_text()) == meta:
        return out
    rng = np.random.default_rng(0)
    classes = sorted(d.name for d in (demo_root / "val").iterdir() if d.is_dir())
    for label, cls in enumerate(classes):
        for path in sorted((demo_root / "val" / cls).iterdir()):
            with Image.open(path) as im:
                img = im.convert("RGB").resize((image_size, image_size), Image.BICUBIC)
            name = path.stem + ".JPEG"
            moved = img.rotate(float(rng.uniform(-12, 12)), resample=Image.BILINEAR,
                               translate=tuple(int(t) for t in rng.integers(-2, 3, size=2)))
            _save(moved, out / "v2" / str(label) / name)
            if label in R_CLASSES:
                _save(ImageOps.invert(img.filter(ImageFilter.MaxFilter(3))), out / "r" / cls / name)
            for corruption in SEVERITY:
                for s in range(1, 6):
                    _save(_corrupt(img, corruption, s, rng), out / "c" / corruption / str(s) / cls / name)
    stamp.write_text(json.dumps(meta))
    return out


def _save(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, quality=95)
