"""Sharpness measurements: the dominant Hessian eigenvalue by power iteration on Hessian-vector products."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def hessian_max_eigenvalue(loss_fn: Callable[[], torch.Tensor], params: Sequence[torch.Tensor], *,
                           iters: int = 100, tol: float = 1e-6, generator: torch.Generator | None = None
                           ) -> tuple[float, list[torch.Tensor]]:
    """Dominant eigenvalue (largest in magnitude) of the Hessian of ``loss_fn()`` w.r.t. ``params``.

    Power iteration on exact Hessian-vector products (double backward through one graph). Stops when
    the Rayleigh quotient changes by less than ``tol`` relative. Returns (eigenvalue, eigenvector).
    Put the model in the mode you want measured (BN in eval mode for a deterministic loss).
    """
    params = [p for p in params if p.requires_grad]
    with torch.enable_grad():
        loss = loss_fn()
        grads = torch.autograd.grad(loss, params, create_graph=True)
    v = [torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device) for p in params]
    norm = torch.sqrt(sum((x * x).sum() for x in v))
    v = [x / norm for x in v]
    eig = None
    for _ in range(iters):
        hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=True)
        new = float(sum((a * b).sum() for a, b in zip(v, hv)))  # Rayleigh quotient v^T H v
        norm = torch.sqrt(sum((x * x).sum() for x in hv))
        if norm == 0:
            return 0.0, v
        v = [x / norm for x in hv]
        if eig is not None and abs(new - eig) <= tol * abs(new):
            return new, v
        eig = new
    return eig, v
