"""What every measurement shares: the mean loss over a fixed set of batches, its gradient, the
model in eval mode, exact weight save/restore, and the sums across data-parallel ranks (gsam.optim.comm)."""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn

from gsam.optim.comm import all_reduce_sum_

Batch = tuple[torch.Tensor, torch.Tensor]
Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def check_batches(batches: Sequence[Batch]) -> list[Batch]:
    batches = list(batches)
    for b in batches:
        if not (isinstance(b, (tuple, list)) and len(b) == 2):
            raise ValueError("batches must be a sequence of (inputs, targets) pairs")
    return batches


def total_batches(batches: Sequence[Batch], device: torch.device) -> int:
    """Number of batches over all ranks: the mean loss weights each batch equally."""
    n = torch.tensor([float(len(batches))], dtype=torch.float64, device=device)
    all_reduce_sum_([n])
    if n.item() == 0:
        raise ValueError("batches is empty (on every rank): nothing to measure")
    return int(n.item())


def trainable(model: nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


def device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """BatchNorm on its running statistics and dropout off, so the loss is a function of the weights
    alone; every module's own train/eval flag is put back afterwards."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in flags:
            m.training = training


@contextlib.contextmanager
def weights_restored(params: Sequence[torch.Tensor]) -> Iterator[None]:
    """Whatever happens inside, the weights come back bit for bit (from a copy, not by subtraction)."""
    saved = [p.detach().clone() for p in params]
    try:
        yield
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)


def to_device(batch: Batch, device: torch.device) -> Batch:
    x, y = batch
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def mean_loss(model: nn.Module, criterion: Criterion, batches: Sequence[Batch]) -> torch.Tensor:
    """f(w): the mean over all ranks' batches of each batch's loss (forward only)."""
    device = device_of(model)
    n = total_batches(batches, device)
    total = torch.zeros((), dtype=torch.float64, device=device)
    with torch.no_grad():
        for b in batches:
            x, y = to_device(b, device)
            total += criterion(model(x), y).double()
    all_reduce_sum_([total])
    return total / n


def mean_loss_and_grad(model: nn.Module, criterion: Criterion, batches: Sequence[Batch],
                       params: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(f(w), grad f(w)) of the mean loss, accumulated batch by batch (memory of one batch)."""
    device = device_of(model)
    n = total_batches(batches, device)
    total = torch.zeros((), dtype=torch.float64, device=device)
    grads = [torch.zeros_like(p) for p in params]
    for b in batches:
        x, y = to_device(b, device)
        with torch.enable_grad():
            loss = criterion(model(x), y)
            gs = torch.autograd.grad(loss, params, allow_unused=True)
        total += loss.detach().double()
        for acc, g in zip(grads, gs):
            if g is not None:
                acc.add_(g, alpha=1.0 / n)
    all_reduce_sum_([total, *grads])
    return total / n, grads


def dot(xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor]) -> torch.Tensor:
    return sum((x.double() * y.double()).sum() for x, y in zip(xs, ys))


def norm(xs: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.sqrt(dot(xs, xs))
