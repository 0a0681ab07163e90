"""2-D test problems with sharp and flat minima (GSAM's Fig. 3, XSAM's Fig. 3a), and the real
optimizers (``gsam.Vanilla/SAM/GSAM/XSAM`` through the factory) run on a 2-parameter model."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from .loop import constant_rho_optimizer, plain_sgd, train_steps


@dataclasses.dataclass(frozen=True)
class Well:
    center: tuple[float, float]
    width: float  # standard deviation of the Gaussian: the curvature at the bottom is depth / width^2
    depth: float


class GaussianWells:
    """f(w) = base - sum_k depth_k exp(-||w - c_k||^2 / (2 width_k^2)) + 0.5 bowl ||w||^2.

    The bowl keeps far-away points from drifting off; each well's Hessian at its centre is about
    (depth/width^2) I, so a narrow well is a sharp minimum and a wide one a flat minimum.
    """

    def __init__(self, wells: Sequence[Well], base: float = 1.0, bowl: float = 0.02):
        if not wells:
            raise ValueError("at least one well is needed")
        for w in wells:
            if not (w.width > 0 and w.depth > 0):
                raise ValueError(f"every well needs width > 0 and depth > 0, got {w}")
        self.wells, self.base, self.bowl = tuple(wells), float(base), float(bowl)

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        """``w``: (..., 2) -> (...)."""
        out = self.base + 0.5 * self.bowl * (w * w).sum(-1)
        for k in self.wells:
            c = torch.tensor(k.center, dtype=w.dtype, device=w.device)
            out = out - k.depth * torch.exp(-((w - c) ** 2).sum(-1) / (2 * k.width**2))
        return out

    def well_of(self, w: Sequence[float], within: float = 1.0) -> int:
        """Index of the well whose centre is within ``within`` of its widths of ``w``, else -1."""
        p = torch.as_tensor(w, dtype=torch.float64)
        for i, k in enumerate(self.wells):
            if (p - torch.tensor(k.center, dtype=torch.float64)).norm() <= within * k.width:
                return i
        return -1


def sharp_and_flat() -> GaussianWells:
    """Well 0 sharp (width 0.1, curvature ~100 at the bottom), well 1 flat (width 0.7, ~2), equally
    deep, 1.4 apart: from a start near the sharp well its gradient points into it."""
    return GaussianWells([Well((0.5, 0.4), 0.1, 1.0), Well((-0.6, -0.4), 0.7, 1.0)])


class Point(nn.Module):
    """A "model" that is just a 2-vector of weights."""

    def __init__(self, start: Sequence[float]):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(list(start), dtype=torch.float64))

    def forward(self) -> torch.Tensor:
        return self.w


def trajectory(fn: GaussianWells, start: Sequence[float], method: Mapping, *, lr: float = 0.02, steps: int = 300,
               momentum: float = 0.0) -> torch.Tensor:
    """Points w_0 ... w_steps of ``method`` (the ``sam`` config group's fields, e.g. {"name": "gsam",
    "rho_max": 0.3, "alpha": 0.5}; "none" is SGD) from ``start``, with SGD as the base optimizer."""
    if len(start) != 2:
        raise ValueError(f"start must be a 2-vector, got {start}")
    model = Point(start)
    opt = constant_rho_optimizer(model, plain_sgd(lr, momentum), method)
    path = [model.w.detach().clone()]
    for _ in train_steps(opt, lambda i: [lambda: fn(model())], steps):
        path.append(model.w.detach().clone())
    return torch.stack(path)
