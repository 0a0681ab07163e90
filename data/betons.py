"""Writing FFCV ``.beton`` files from image lists, with the class list stored beside each beton.

Every image is decoded once before writing (in parallel): an unreadable or truncated file is reported by
path and left out, instead of killing FFCV's writer hours into a 1.28M-image job. The sidecar
``<name>.json`` holds the class order (sorted wnids), the writer options, the skipped files and, for the
evaluation splits, the file of every record (ReaL needs each val image's file name), and the beton's size
and checksums (data/beton_check.py), which the loader verifies before use. The FFCV page is sized from the
split's largest image (data/beton_sizes.py), and the writer's workers are watched (data/beton_writer.py): a
failure stops the write with the worker's error and file, and leaves no file behind.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from .beton_errors import WriterFailed  # noqa: F401  (callers catch it from here)
from .sources import rgb
from .write_guard import process_pool

SIDECAR_VERSION = 2  # 2: the beton's size and checksums under "beton"
# The writer options that keep an image as decoded from its source file: no resize, no JPEG re-encoding.
ORIGINAL_PIXELS = {"max_resolution": None, "write_mode": "raw", "jpeg_quality": 90, "compress_probability": 0.0}


def sidecar_path(beton: Path) -> Path:
    return Path(beton).with_suffix(".json")


# what the readers take from a sidecar, and the JSON type each must have (``beton`` is absent before version 2)
SIDECAR_FIELDS = {"classes": list, "options": dict, "files": (list, type(None)), "beton": (dict, type(None))}


def read_sidecar(beton: Path) -> dict:
    """The sidecar of ``beton``; ValueError naming it when it is not JSON or not of the shape written here."""
    path = sidecar_path(beton)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; every beton needs the class list written beside it by "
                                "scripts/write_betons.py")
    again = f"rewrite it with scripts/write_betons.py --splits {Path(beton).stem}"
    try:
        meta = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError, RecursionError) as e:  # json.JSONDecodeError is a ValueError
        raise ValueError(f"{path}: not a sidecar, its JSON does not parse ({e}); {again}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: not a sidecar (a JSON {type(meta).__name__}, not an object); {again}")
    for key, kind in SIDECAR_FIELDS.items():
        if not isinstance(meta.get(key), kind):
            raise ValueError(f"{path}: not a sidecar ({key!r} is {type(meta.get(key)).__name__}); {again}")
    beton_record = meta.get("beton") or {"bytes": 0, "fingerprint": ""}
    if (not all(isinstance(c, str) for c in meta["classes"]) or not isinstance(meta["options"].get("write_mode"), str)
            or not isinstance(beton_record.get("bytes"), int) or not isinstance(beton_record.get("fingerprint"), str)):
        raise ValueError(f"{path}: not a sidecar (its classes, write_mode, bytes or fingerprint are of the wrong "
                         f"type); {again}")
    return meta


def _check_image(path: str) -> str | None:
    """None if ``path`` decodes completely, else the reason."""
    try:
        with Image.open(path) as im:
            im.draft("RGB", (64, 64))  # JPEG DCT scaling: reads the whole stream, decodes at 1/8 size
            rgb(im).load()
        return None
    except Exception as e:  # noqa: BLE001 - any decoder failure means the file is unusable
        return f"{type(e).__name__}: {e}"


def scan_images(samples: list[tuple[str, int]], workers: int, progress: bool = True
                ) -> tuple[list[tuple[str, int]], list[dict]]:
    """(readable samples, [{"path", "error"}] for the others), in the original order."""
    paths = [p for p, _ in samples]
    with process_pool(workers) as pool:
        results = pool.map(_check_image, paths, chunksize=256)
        if progress:
            from tqdm import tqdm

            results = tqdm(results, total=len(paths), desc="checking images", unit="img")
        errors = list(results)
    good = [s for s, e in zip(samples, errors) if e is None]
    bad = [{"path": p, "error": e} for p, e in zip(paths, errors) if e is not None]
    return good, bad


class _ImageList:
    """FFCV's indexed-dataset protocol: item i is (RGB uint8 array, label)."""

    def __init__(self, samples: list[tuple[str, int]]):
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i):
        path, label = self.samples[i]
        with Image.open(path) as im:
            return np.asarray(rgb(im)), label


def write_beton(path: Path, samples: list[tuple[str, int]], classes: list[str], *, max_resolution: int | None,
                write_mode: str, jpeg_quality: int, compress_probability: float, workers: int,
                keep_files: bool, progress: bool = True, source: str | None = None, plan=None) -> dict:
    """Write ``samples`` to ``path`` (atomically: a temporary file renamed at the end) and its sidecar.
    ``plan``: the split's ``beton_sizes.SplitPlan`` when the caller has made it. Returns the sidecar's contents.
    Raises ValueError for bad options or an image FFCV cannot store, ``WriterFailed`` when a worker fails."""
    from ffcv.fields import IntField, RGBImageField

    from .beton_check import identity
    from .beton_sizes import plan_split, read_headers
    from .beton_writer import WatchedWriter

    if write_mode not in ("raw", "jpg", "proportion", "smart"):
        raise ValueError(f"--write-mode must be raw, jpg, proportion or smart, got {write_mode!r}")
    if not 0 <= compress_probability <= 1:
        raise ValueError(f"--compress-probability must be in [0, 1], got {compress_probability}")
    if not 1 <= jpeg_quality <= 100:
        raise ValueError(f"--jpeg-quality must be in 1..100, got {jpeg_quality}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if plan is None:
        paths = [p for p, _ in samples]
        plan = plan_split(paths, read_headers(paths, workers), max_resolution=max_resolution, write_mode=write_mode,
                          compress_probability=compress_probability, workers=workers)
    good, bad = scan_images(samples, workers, progress)
    for b in bad:
        print(f"[write_betons] skipping unreadable image {b['path']} ({b['error']})")
    if not good:
        raise ValueError(f"{path.name}: none of the {len(samples)} images could be read")
    tmp = path.with_name(path.name + ".tmp")
    fields = {"image": RGBImageField(write_mode=write_mode, max_resolution=max_resolution, jpeg_quality=jpeg_quality,
                                     compress_probability=compress_probability),
              "label": IntField()}
    writer = WatchedWriter(str(tmp), fields, page_size=plan.page_size, num_workers=max(workers, 1),
                           name=str(path), describe=lambda i: good[i][0], progress=progress)
    try:
        writer.from_indexed_dataset(_ImageList(good), chunksize=100)
        written = {**identity(tmp), "page_size": plan.page_size}
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    meta = {"version": SIDECAR_VERSION, "source": source, "classes": classes, "num_images": len(good),
            "options": {"max_resolution": max_resolution, "write_mode": write_mode, "jpeg_quality": jpeg_quality,
                        "compress_probability": compress_probability},
            "beton": written,
            "skipped": bad, "files": [p for p, _ in good] if keep_files else None}
    side = sidecar_path(path)
    side.with_name(side.name + ".tmp").write_text(json.dumps(meta))
    os.replace(side.with_name(side.name + ".tmp"), side)
    return meta
