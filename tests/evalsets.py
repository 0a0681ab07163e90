"""Fixtures for the evaluation tests: images in the real on-disk layouts, and a model whose predictions
the test sets through the image colour.

An image's colour encodes a code c in 0..1023 (red = c // 32, green = c % 32, in steps of 8 grey levels,
far above JPEG's error on a flat colour); ``CodeModel`` reads the code back and returns row c of a logit
table the test wrote, so every prediction, top-5 list and restricted argmax is chosen by the test.
"""
from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

NUM_CLASSES = 1000
CLASSES = [f"n{i:08d}" for i in range(NUM_CLASSES)]  # stand-in wnids, sorted = index order


def write_code_image(path: Path, code: int, size: int = 12) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = (8 * (code // 32) + 4, 8 * (code % 32) + 4, 128)
    Image.new("RGB", (size, size), colour).save(path, quality=95)


class CodeModel(torch.nn.Module):
    """Logits = table[code of the image]; inputs normalised with mean 0, std 1 (pixels in [0, 1])."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.register_buffer("table", table)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        rgb = x.mean(dim=(2, 3)) * 255
        code = ((rgb[:, 0] - 4) / 8).round().long() * 32 + ((rgb[:, 1] - 4) / 8).round().long()
        return self.table[code]


def ranked_logits(*classes: int) -> torch.Tensor:
    """A logit row whose top-k order is ``classes`` (then everything else)."""
    row = torch.zeros(NUM_CLASSES)
    for rank, c in enumerate(classes):
        row[c] = 100.0 - rank
    return row
