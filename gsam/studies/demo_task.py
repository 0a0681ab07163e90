"""A task small enough for the analysis scripts and tests on 2 CPU cores: the embedded demo digits
(``data/demo.py``, the trainer's data) held in memory at low resolution, a small MLP with BatchNorm,
and a plain train loop (gsam/studies/loop.py) that drives any method of the optimizer factory."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from gsam.optim import SharpnessAware, Vanilla, lr_at
from .loop import constant_rho_optimizer, train_steps


@dataclasses.dataclass
class DemoData:
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor

    def batches(self, split: str, batch_size: int, limit: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Fixed, unshuffled batches of ``split`` (the first ``limit`` images of a seeded order)."""
        x, y = (self.train_x, self.train_y) if split == "train" else (self.val_x, self.val_y)
        n = len(x) if limit is None else min(limit, len(x))
        return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, n, batch_size)]


def load_demo_data(root: str | Path = "outputs/demo_data", size: int = 16, dtype=torch.float32) -> DemoData:
    """The demo JPEGs (written if missing) as grey ``size`` x ``size`` images in [-1, 1], flattened.

    The training images are put in a fixed order (permutation seeded with 0) so that "the first n
    images" is a class-balanced subset; the validation images keep their folder order.
    """
    from gsam.data.demo import write_demo_dataset

    root = write_demo_dataset(root)
    if not 1 <= size <= 32:
        raise ValueError(f"size must be in 1..32 (the demo images are 32x32), got {size}")
    out = []
    for split in ("train", "val"):
        classes = sorted(p for p in (Path(root) / split).iterdir() if p.is_dir())
        xs, ys = [], []
        for label, folder in enumerate(classes):
            for f in sorted(folder.glob("*.JPEG")):
                img = Image.open(f).convert("L").resize((size, size), Image.BILINEAR)
                xs.append(np.asarray(img, dtype=np.float32))
                ys.append(label)
        x = torch.from_numpy(np.stack(xs)).reshape(len(xs), -1).to(dtype) / 127.5 - 1.0
        y = torch.tensor(ys)
        if split == "train":
            order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
            x, y = x[order], y[order]
        out += [x, y]
    return DemoData(*out)


def demo_mlp(in_features: int = 256, width: int = 64, num_classes: int = 10, seed: int = 0,
             dtype=torch.float32) -> nn.Module:
    """Linear-BN-ReLU-Linear-ReLU-Linear: BatchNorm so that the eval-mode handling is exercised."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(in_features, width), nn.BatchNorm1d(width), nn.ReLU(),
                         nn.Linear(width, width), nn.ReLU(), nn.Linear(width, num_classes)).to(dtype)


@dataclasses.dataclass
class TrainSpec:
    """A plain run: constant rho, lr with linear decay, SGD or AdamW under any method."""

    method: Mapping  # the ``sam`` config group's fields, e.g. {"name": "gsam", "rho_max": 0.1, "alpha": 0.2}
    epochs: int = 20
    batch_size: int = 64
    lr: float = 0.1
    lr_min: float = 0.001
    optimizer: str = "sgd"
    weight_decay: float = 5e-4
    seed: int = 0
    m: int | None = None  # images per perturbation group (m-sharpness); None = the whole batch


def build_demo_optimizer(model: nn.Module, spec: TrainSpec) -> SharpnessAware:
    return constant_rho_optimizer(model, {"name": spec.optimizer, "lr": spec.lr, "weight_decay": spec.weight_decay},
                                  spec.method)


def train_demo(model: nn.Module, data: DemoData, spec: TrainSpec,
               on_epoch: Callable[[int, nn.Module], dict] | None = None) -> list[dict]:
    """Train ``model`` in place; returns one record per epoch: the mean train loss and h of the steps
    (the optimizer's own per-batch f and f_p), plus whatever ``on_epoch(epoch, model)`` returns."""
    if spec.m is not None and (spec.m <= 0 or spec.batch_size % spec.m):
        raise ValueError(f"m={spec.m} must divide the batch of {spec.batch_size} into perturbation groups")
    opt = build_demo_optimizer(model, spec)
    g = torch.Generator().manual_seed(spec.seed)
    n = len(data.train_x)
    steps_per_epoch = n // spec.batch_size
    total = spec.epochs * steps_per_epoch
    m = spec.m or spec.batch_size
    history = []
    for epoch in range(spec.epochs):
        model.train()
        order = torch.randperm(n, generator=g)

        def groups(i: int, order: torch.Tensor = order) -> list[Callable[[], torch.Tensor]]:
            idx = order[i * spec.batch_size:(i + 1) * spec.batch_size]
            x, y = data.train_x[idx], data.train_y[idx]
            return [lambda xg=xg, yg=yg: F.cross_entropy(model(xg), yg) for xg, yg in zip(x.split(m), y.split(m))]

        def lr(i: int, first: int = epoch * steps_per_epoch) -> float:
            return lr_at(first + i, total_steps=total, warmup_steps=0, lr_max=spec.lr, lr_min=spec.lr_min)

        losses, gaps = [], []
        for stats in train_steps(opt, groups, steps_per_epoch, lr=lr):
            losses.append(stats.loss.item())
            if not isinstance(opt, Vanilla):
                gaps.append(stats.surrogate_gap.item())
        record = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)),
                  "step_surrogate_gap": float(np.mean(gaps)) if gaps else None}
        if on_epoch is not None:
            record.update(on_epoch(epoch + 1, model))
        history.append(record)
    return history


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 (%) in eval mode; the model's mode is restored."""
    was = model.training
    model.eval()
    try:
        return 100.0 * (model(x).argmax(1) == y).double().mean().item()
    finally:
        model.train(was)
