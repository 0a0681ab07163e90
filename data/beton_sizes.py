"""A split's size before it is written: FFCV page size, the images FFCV cannot store, the estimate on disk.

All from the image headers (PIL reads a size without decoding): ``read_headers`` gives each file's width,
height and bytes; ``plan_split`` turns them into what the writer needs. FFCV stores each record whole inside
one page, and a record larger than the page kills the writer ("Tried allocating ... but page size is ...");
the page is therefore sized from the split's largest stored record, never fixed.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
from PIL import Image

from .write_guard import process_pool

MIN_PAGE = 8 << 20  # FFCV's default page (4 x its 2 MiB minimum): ILSVRC-2012 records mostly fit in it
MAX_PAGE = 1 << 31  # FFCV's header stores the page size as uint32, and a page is a power of two
MAX_SIDE = 65535  # FFCV's RGBImageField stores width and height as uint16
# A JPEG record is smaller than the raw one: white noise encoded at quality 100 by OpenCV, FFCV's encoder, is
# 0.66-0.71x its raw size plus a ~700-byte header (measured, 8-1000 px); real images far less. So raw + 64 KiB
# bounds any record.
RECORD_SLACK = 64 << 10
# Per record outside the data pages: FFCV's metadata row for (RGBImageField, IntField) and its allocation
# table row (ffcv.types: get_metadata_type(...).itemsize == 24, ALLOC_TABLE_TYPE.itemsize == 24)
INDEX_BYTES = 24 + 24
HEADER_BYTES = 24 + 2 * 1041  # ffcv.types.HeaderType + one FieldDescType per field


def _header(path: str) -> tuple[int, int, int]:
    """(width, height, file bytes), or (-1, -1, -1) when PIL cannot open the file (the decode scan reports why)."""
    try:
        with open(path, "rb") as f, Image.open(f) as im:
            w, h = im.size
            return w, h, f.seek(0, 2)
    except Exception:  # noqa: BLE001 - unreadable: left to the decode scan, which names the error
        return -1, -1, -1


def read_headers(paths: list[str], workers: int) -> np.ndarray:
    """(n, 3) int64: width, height, bytes of each file (-1 where unreadable)."""
    if workers <= 1:
        return np.array([_header(p) for p in paths], dtype=np.int64).reshape(-1, 3)
    with process_pool(workers) as pool:
        return np.array(list(pool.map(_header, paths, chunksize=512)), dtype=np.int64).reshape(-1, 3)


def stored_size(w: np.ndarray, h: np.ndarray, max_resolution: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Width and height as FFCV stores them: the longer side scaled down to ``max_resolution``, truncated
    as ``ffcv.fields.rgb_image.resizer`` does (``(ratio * size).astype(int)``)."""
    w, h = np.asarray(w, dtype=np.int64), np.asarray(h, dtype=np.int64)
    if not max_resolution:
        return w, h
    ratio = max_resolution / np.maximum(np.maximum(w, h), 1)
    shrink = ratio < 1
    return np.where(shrink, (ratio * w).astype(np.int64), w), np.where(shrink, (ratio * h).astype(np.int64), h)


@dataclasses.dataclass
class SplitPlan:
    images: int  # files whose header could be read
    page_size: int  # bytes, a power of two
    estimate_bytes: int  # on disk
    largest: str  # the file of the largest record, "WxH" after it


def page_size_for(largest_record: int) -> int:
    return max(MIN_PAGE, 1 << math.ceil(math.log2(largest_record + RECORD_SLACK)))


def plan_split(paths: list[str], headers: np.ndarray, *, max_resolution: int | None, write_mode: str,
               compress_probability: float, workers: int) -> SplitPlan:
    """The page size and size on disk of a split; ValueError, naming the file, for an image FFCV cannot store."""
    ok = headers[:, 0] > 0
    w, h, nbytes = headers[ok, 0], headers[ok, 1], headers[ok, 2]
    sw, sh = stored_size(w, h, max_resolution)
    names = [p for p, good in zip(paths, ok) if good]
    for bad, why in ((np.maximum(sw, sh) > MAX_SIDE, f"a side over {MAX_SIDE} px (FFCV stores sides as uint16)"),
                     (np.minimum(sw, sh) < 1, f"a side under 1 px once the longer is resized to {max_resolution}"),
                     (sw * sh * 3 + RECORD_SLACK > MAX_PAGE, "over 2 GiB of RGB (FFCV's largest page)")):
        if bad.any():
            k = int(np.argmax(bad))
            raise ValueError(f"{names[k]}: {w[k]}x{h[k]} px, too large to store in a beton: {why}; "
                             "remove it or lower --max-side")
    raw = sw * sh * 3
    jpeg = nbytes * (sw * sh) / np.maximum(w * h, 1)  # the source's bytes per pixel, at the stored size
    share = {"raw": 0.0, "smart": 0.0, "jpg": 1.0, "proportion": compress_probability}[write_mode]
    data = float(((1 - share) * raw + share * jpeg).sum())
    k = int(np.argmax(raw)) if len(raw) else 0
    page = page_size_for(int(raw[k]) if len(raw) else 0)
    mean_record = data / max(len(raw), 1)
    # a record never straddles two pages (about half a record lost at each page's end), every worker writes its
    # last page whole, and the data begins at a page boundary after the index
    pages = data / page * (1 + mean_record / (2 * page)) + max(workers, 1) + 1
    index = HEADER_BYTES + len(raw) * INDEX_BYTES
    largest = f"{names[k]} {w[k]}x{h[k]}" if len(raw) else "none"
    return SplitPlan(images=len(raw), page_size=page, estimate_bytes=int(pages * page + index), largest=largest)
