"""sigma_max, the dominant eigenvalue of the Hessian of the loss, by power iteration on exact
Hessian-vector products (double backward). The sharpness measure of Lemma 3.3 and Fig. 4 (middle)."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from gsam.optim.comm import all_reduce_sum_
from .core import Batch, Criterion, check_batches, device_of, dot, eval_mode, norm, to_device, total_batches, \
    trainable


@dataclasses.dataclass
class Eigen:
    eigenvalue: float  # largest in magnitude (near a minimum: sigma_max >= 0)
    vector: list[torch.Tensor]  # unit norm, one tensor per parameter
    iterations: int
    converged: bool  # the Rayleigh quotient moved by less than tol (relative) in the last iteration


def _start_vector(params: Sequence[torch.Tensor], seed: int) -> list[torch.Tensor]:
    """Drawn on the CPU from its own generator: the same on every rank and every device."""
    g = torch.Generator().manual_seed(seed)
    v = [torch.randn(p.shape, generator=g, dtype=p.dtype).to(p.device) for p in params]
    n = norm(v)
    return [x / n.to(x.dtype) for x in v]


def _power_iteration(hvp: Callable[[list[torch.Tensor]], list[torch.Tensor]], params: Sequence[torch.Tensor],
                     iters: int, tol: float, seed: int) -> Eigen:
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    if not params:
        raise ValueError("no parameter requires grad: nothing to measure")
    v = _start_vector(params, seed)
    eig = None
    for i in range(1, iters + 1):
        hv = hvp(v)
        new = float(dot(v, hv))  # Rayleigh quotient v^T H v (|v| = 1)
        n = norm(hv)
        if n == 0:
            return Eigen(0.0, v, i, True)
        v = [x / n.to(x.dtype) for x in hv]
        if eig is not None and abs(new - eig) <= tol * abs(new):
            return Eigen(new, v, i, True)
        eig = new
    return Eigen(eig, v, iters, False)


def hessian_max_eigenvalue(loss_fn: Callable[[], torch.Tensor], params: Sequence[torch.Tensor], *,
                           iters: int = 100, tol: float = 1e-6, generator: torch.Generator | None = None
                           ) -> tuple[float, list[torch.Tensor]]:
    """Dominant eigenvalue (largest in magnitude) of the Hessian of ``loss_fn()`` w.r.t. ``params``,
    with one graph kept for all iterations. Returns (eigenvalue, eigenvector). The caller puts the
    model in the mode to be measured; ``dominant_eigenvalue`` does that for a set of batches."""
    params = [p for p in params if p.requires_grad]
    with torch.enable_grad():
        grads = torch.autograd.grad(loss_fn(), params, create_graph=True)
    seed = int(torch.randint(2**31 - 1, (), generator=generator)) if generator is not None else 0

    def hvp(v):
        return list(torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True))

    res = _power_iteration(hvp, params, iters, tol, seed)
    return res.eigenvalue, res.vector


def dominant_eigenvalue(model: nn.Module, criterion: Criterion, batches: Sequence[Batch], *, iters: int = 100,
                        tol: float = 1e-4, seed: int = 0) -> Eigen:
    """sigma_max of the Hessian of f(w) = mean over ``batches`` of ``criterion(model(x), y)``.

    Deterministic: fixed batches, the model in eval mode (BatchNorm on its running statistics,
    dropout off; the modes are restored afterwards) and a start vector from ``seed``. H v is
    accumulated batch by batch (one graph in memory at a time). Under an initialised process group
    each rank passes its own batches and H v is summed over ranks, so every rank iterates on the
    Hessian of the mean over all ranks' batches and returns the same eigenvalue. Pass the bare
    module, not a DDP wrapper (its hooks do not support double backward). Attention runs on the
    math kernel of ``scaled_dot_product_attention``: the fused ones cannot be differentiated twice.
    """
    batches = check_batches(batches)
    params = trainable(model)
    device = device_of(model)
    n = total_batches(batches, device)

    def hvp(v):
        out = [torch.zeros_like(p) for p in params]
        for b in batches:
            x, y = to_device(b, device)
            with torch.enable_grad():
                loss = criterion(model(x), y) / n
                grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
                used = [(i, g) for i, g in enumerate(grads) if g is not None and g.requires_grad]
                hv = torch.autograd.grad([g for _, g in used], [params[i] for i, _ in used],
                                         grad_outputs=[v[i] for i, _ in used], allow_unused=True)
            for (i, _), h in zip(used, hv):
                if h is not None:
                    out[i].add_(h)
        all_reduce_sum_(out)
        return out

    # the fused attention kernels (flash, memory-efficient) have no double backward; the math one has
    with eval_mode(model), sdpa_kernel(SDPBackend.MATH):
        return _power_iteration(hvp, params, iters, tol, seed)
