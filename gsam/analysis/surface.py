"""Loss-surface slices around the weights: f(w + a d1) and f(w + a d1 + b d2) on a grid, along the
gradient, GSAM's g_perp or random filter-normalised directions (Li et al., 2018)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .core import Batch, Criterion, check_batches, dot, eval_mode, mean_loss, mean_loss_and_grad, norm, \
    trainable, weights_restored

DIRECTIONS = ("gradient", "g_perp", "random")


def _unit(vs: list[torch.Tensor]) -> list[torch.Tensor]:
    n = norm(vs)
    if n == 0:
        raise ValueError("the direction is zero: it cannot be normalised")
    return [v / n.to(v.dtype) for v in vs]


def gradient_direction(model: nn.Module, criterion: Criterion, batches: Sequence[Batch]) -> list[torch.Tensor]:
    """grad f / ||grad f|| over the batches (eval mode)."""
    with eval_mode(model):
        _, g = mean_loss_and_grad(model, criterion, check_batches(batches), trainable(model))
    return _unit(g)


def g_perp_direction(model: nn.Module, criterion: Criterion, batches: Sequence[Batch], rho: float
                     ) -> list[torch.Tensor]:
    """g_perp / ||g_perp||: the part of grad f orthogonal to grad f_p (Eq. 6), along which GSAM ascends
    (Algorithm 1, step 3), with f_p at w + rho g/||g||. Unit norm."""
    if not rho > 0:
        raise ValueError(f"rho must be > 0, got {rho}")
    params = trainable(model)
    batches = check_batches(batches)
    with eval_mode(model):
        _, g = mean_loss_and_grad(model, criterion, batches, params)
        with weights_restored(params), torch.no_grad():
            scale = rho / norm(g).clamp_min(1e-30).item()
            for p, gi in zip(params, g):
                p.add_(gi, alpha=scale)
            _, g_p = mean_loss_and_grad(model, criterion, batches, params)
    parallel = dot(g, g_p) / dot(g_p, g_p).clamp_min(1e-300)
    return _unit([gi - parallel.to(gi.dtype) * gp for gi, gp in zip(g, g_p)])


def random_filter_normalized_direction(model: nn.Module, seed: int = 0) -> list[torch.Tensor]:
    """A Gaussian direction rescaled filter by filter to the weights' norms (Li et al., 2018).

    A "filter" is one slice along the first (output) dimension of a weight with >= 2 dims: a conv
    kernel's output channel, a linear layer's row. 1-D parameters (biases, BatchNorm/LayerNorm scales
    and shifts) get 0, as Li et al. do for biases and BN: the slice moves only the weight matrices
    and kernels, whose scale is what filter normalisation removes. Seeded on the CPU: the same on
    every device and rank. Not unit norm: its length is that of the weights it covers.
    """
    g = torch.Generator().manual_seed(seed)
    out = []
    for p in trainable(model):
        d = torch.randn(p.shape, generator=g, dtype=p.dtype).to(p.device)
        if p.dim() < 2:
            out.append(torch.zeros_like(p))
            continue
        w = p.detach().reshape(p.shape[0], -1)
        dv = d.reshape(p.shape[0], -1)
        dv.mul_(w.norm(dim=1, keepdim=True) / dv.norm(dim=1, keepdim=True).clamp_min(1e-30))
        out.append(d)
    return out


def direction(kind: str, model: nn.Module, criterion: Criterion, batches: Sequence[Batch], *, rho: float = 0.05,
              seed: int = 0) -> list[torch.Tensor]:
    """One of ``DIRECTIONS`` by name (rho for g_perp, seed for random)."""
    if kind == "gradient":
        return gradient_direction(model, criterion, batches)
    if kind == "g_perp":
        return g_perp_direction(model, criterion, batches, rho)
    if kind == "random":
        return random_filter_normalized_direction(model, seed)
    raise ValueError(f"direction must be one of {DIRECTIONS}, got {kind!r}")


def _check_direction(params: list[torch.Tensor], d: Sequence[torch.Tensor], name: str) -> None:
    if len(d) != len(params) or any(a.shape != p.shape for a, p in zip(d, params)):
        raise ValueError(f"{name} must have one tensor per trainable parameter, of the same shapes")


def loss_slice_2d(model: nn.Module, criterion: Criterion, batches: Sequence[Batch], d1: Sequence[torch.Tensor],
                  d2: Sequence[torch.Tensor], xs: Sequence[float], ys: Sequence[float]) -> torch.Tensor:
    """Grid L[i, j] = f(w + xs[j] d1 + ys[i] d2) (eval mode; weights restored bit for bit)."""
    params = trainable(model)
    batches = check_batches(batches)
    _check_direction(params, d1, "d1")
    _check_direction(params, d2, "d2")
    out = torch.empty(len(ys), len(xs), dtype=torch.float64)
    with eval_mode(model), weights_restored(params), torch.no_grad():
        w0 = [p.detach().clone() for p in params]
        for i, b in enumerate(ys):
            for j, a in enumerate(xs):
                for p, w, u, v in zip(params, w0, d1, d2):
                    torch.add(w, u, alpha=float(a), out=p)
                    p.add_(v, alpha=float(b))
                out[i, j] = mean_loss(model, criterion, batches).item()
    return out


def loss_slice_1d(model: nn.Module, criterion: Criterion, batches: Sequence[Batch], d: Sequence[torch.Tensor],
                  xs: Sequence[float]) -> torch.Tensor:
    """L[j] = f(w + xs[j] d) (eval mode; weights restored bit for bit)."""
    zero = [torch.zeros_like(t) for t in d]
    return loss_slice_2d(model, criterion, batches, d, zero, xs, [0.0])[0]
