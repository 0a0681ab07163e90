"""Fixtures for the evaluation tests: images in the real on-disk layouts, and a model whose predictions
the test sets through the image colour.

An image's colour encodes a code c in 0..1023 (red = c // 32, green = c % 32, in steps of 8 grey levels,
far above JPEG's error on a flat colour); ``CodeModel`` reads the code back and returns row c of a logit
table the test wrote, so every prediction, top-5 list and restricted argmax is chosen by the test.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import OmegaConf
from PIL import Image

# at import, not in evaluate_all: tests/eval_worker.py must import torchvision (through gsam.data.folder) before
# it starts gloo, see there
from gsam.data.folder import eval_loader, eval_transform
from gsam.evaluation.sets import build_eval_sets

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


def write_mixed_fixture(root: Path) -> dict:
    """A small instance of every layout, with odd counts so that an even split across 2 ranks would need
    padding: val (7 images, ReaL names) + real.json, V2 (7), R (5), C (2 corruptions x 2 severities x 3).
    Returns the eval.* settings; the model to use is ``CodeModel(mixed_table())``."""
    codes = iter(range(1000))
    val = [(root / "val" / CLASSES[c % 4] / f"ILSVRC2012_val_{n:08d}.JPEG", c % 4) for n, c in enumerate(range(7), 1)]
    for path, _ in val:
        write_code_image(path, next(codes))
    (root / "real.json").write_text(json.dumps([[0], [], [1, 2], [3], [0, 1], [2], []]))
    for k in range(7):
        write_code_image(root / "v2" / str(k % 3) / f"{k:040x}.jpeg", next(codes))
    for k in range(5):
        write_code_image(root / "r" / CLASSES[[1, 4, 6][k % 3]] / f"r{k}.jpg", next(codes))
    for c in ("fog", "snow"):
        for s in (1, 2):
            for k in range(3):
                write_code_image(root / "c" / c / str(s) / CLASSES[k] / f"c{k}.JPEG", next(codes))
    return {"real_labels": str(root / "real.json"), "v2": str(root / "v2"), "r": str(root / "r"),
            "c": str(root / "c"), "val": [(str(p), y) for p, y in val]}


def mixed_table() -> torch.Tensor:
    """A fixed random logit table: predictions right or wrong in no pattern the code could exploit."""
    g = torch.Generator().manual_seed(0)
    table = torch.randn(1024, NUM_CLASSES, generator=g)
    table[:, :8] += 3 * torch.rand(1024, 8, generator=g)  # the fixture's classes often, not always, win
    return table


def evaluate_all(settings: dict, rank: int, world: int) -> dict:
    """Every evaluator on the mixed fixture (``write_mixed_fixture``'s settings), on this rank's shard."""
    cfg = eval_config({"img_size": 8, "eval_batch_size": 2, "num_workers": 0, "crop_pct": 1.0},
                      **{k: settings[k] for k in ("real_labels", "v2", "r", "c")})
    samples = [tuple(s) for s in settings["val"]]
    val = eval_loader(samples, eval_transform(8, (0.0,) * 3, (1.0,) * 3, 1.0), batch=2, num_workers=0, rank=rank,
                      world=world)
    evs = build_eval_sets(cfg, classes=CLASSES, loaders={"val": val}, files={"val": [p for p, _ in samples]},
                           loss_fn=torch.nn.functional.cross_entropy, mean=(0.0,) * 3, std=(1.0,) * 3, rank=rank,
                           world=world, notice=lambda *_: None)
    model = CodeModel(mixed_table())
    return {name: ev(model, torch.device("cpu"), None) for name, ev in evs.items()}


def eval_config(data: dict, corruptions=None, **eval_keys):
    """A config for build_eval_sets: ``data``, and the shipped configs/eval/default.yaml with ReaL off, the
    ``eval_keys`` named like a set (v2=..., r=..., c=...) as that set's path, the others (real_labels,
    allow_partial) as eval keys, and ImageNet-C's ``corruptions``."""
    from support import ROOT

    ev = OmegaConf.load(ROOT / "configs" / "eval" / "default.yaml")
    ev.real_labels = None
    for key, value in eval_keys.items():
        if key in ev.sets:
            ev.sets[key].path = value
        else:
            ev[key] = value
    ev.sets.c.corruptions = corruptions
    return OmegaConf.create({"data": data, "eval": ev})
