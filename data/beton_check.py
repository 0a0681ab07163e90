"""A beton's identity, recorded in its sidecar at write time and checked before every use.

A beton cut short (a copy to local scratch still running or interrupted, a full disk) makes FFCV's reader
thread fail on its first batch, and the trainer wait for that batch for ever; a cut at another place ends in
"negative dimensions are not allowed", naming no file. So the loader compares each beton with its sidecar
first, at a cost that stays small for a 150 GB file:

- ``bytes``: the file's size (one stat). Catches every truncated or over-long copy.
- ``fingerprint``: BLAKE2b of the part of the file FFCV indexes by (header, field table, per-record
  metadata: from the start to the first data page), of the allocation table (from ``alloc_table_ptr`` to the
  end), and of ``SAMPLES`` blocks of ``BLOCK`` bytes spread evenly over the whole file. About 24 + 24 bytes
  per record plus one page and 4 MiB of samples: ~70 MB for ImageNet's train beton, which FFCV's own reader
  reads in full anyway. It catches a sidecar that belongs to another beton, a damaged index, and a copy of
  the right size with a hole of zeros longer than 1/64 of the file (a preallocating copy that stopped).
- ``blake2b``: the hash of every byte, computed once after writing; ``scripts/write_betons.py --verify``
  checks it (a full read: minutes for 150 GB, so not at every start).
"""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np

BLOCK = 64 * 1024
SAMPLES = 64
# ffcv.types.HeaderType, read without importing ffcv; the allocation table after alloc_table_ptr is rows of
# (sample_id, ptr, size) as <u8 (ffcv.types.ALLOC_TABLE_TYPE)
_HEADER = np.dtype([("version", "<u2"), ("num_fields", "<u2"), ("page_size", "<u4"), ("num_samples", "<u8"),
                    ("alloc_table_ptr", "<u8")], align=True)


def _read(f, offset: int, length: int) -> bytes:
    f.seek(offset)
    return f.read(max(length, 0))


def fingerprint(path: Path, size: int | None = None) -> str:
    """The sidecar's ``fingerprint`` of the beton at ``path`` (see the module docstring)."""
    path = Path(path)
    size = path.stat().st_size if size is None else size
    h = hashlib.blake2b(size.to_bytes(8, "little"), digest_size=16)
    with open(path, "rb") as f:
        head = np.frombuffer(_read(f, 0, _HEADER.itemsize).ljust(_HEADER.itemsize, b"\0"), dtype=_HEADER)[0]
        table_at = min(int(head["alloc_table_ptr"]), size)
        table = _read(f, table_at, size - table_at)
        ptrs = np.frombuffer(table[: len(table) // 24 * 24], dtype="<u8").reshape(-1, 3)[:, 1]
        data_start = min(int(ptrs.min()), table_at) if len(ptrs) else table_at  # the first page: the index ends there
        h.update(_read(f, 0, data_start))
        h.update(table)
        step = max(size // SAMPLES, 1)
        for k in range(SAMPLES):
            h.update(_read(f, min(k * step, max(size - BLOCK, 0)), BLOCK))
    return h.hexdigest()


def full_hash(path: Path) -> str:
    """BLAKE2b of every byte of ``path``."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while data := f.read(1 << 24):
            h.update(data)
    return h.hexdigest()


def identity(path: Path) -> dict:
    """What write_betons records in the sidecar's ``beton`` entry."""
    size = Path(path).stat().st_size
    return {"bytes": size, "fingerprint": fingerprint(path, size), "blake2b": full_hash(path)}


def check_beton(path: Path, recorded: dict | None, full: bool = False) -> None:
    """Raise ValueError, in one line naming ``path``, if the beton is not the one its sidecar describes.
    ``recorded``: the sidecar's ``beton`` entry (None for a sidecar written before it existed: a warning)."""
    path = Path(path)
    again = "copy it again, or rewrite it with scripts/write_betons.py"
    if recorded is None:  # a beton written before sidecars recorded these: usable, but unchecked
        warnings.warn(f"{path}: unchecked, its sidecar records no size or checksum; rewrite it with "
                      f"scripts/write_betons.py --splits {path.stem} to have it checked", stacklevel=2)
        return
    size = path.stat().st_size
    if size != recorded["bytes"]:
        raise ValueError(f"{path}: {size:,} bytes, but {recorded['bytes']:,} were written (an incomplete or "
                         f"damaged copy); {again}")
    if fingerprint(path, size) != recorded["fingerprint"]:
        raise ValueError(f"{path}: its contents differ from those written (index or sampled blocks); {again}")
    if full and full_hash(path) != recorded["blake2b"]:
        raise ValueError(f"{path}: its BLAKE2b differs from the one written; {again}")
