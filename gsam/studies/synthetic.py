"""A noise-free synthetic task for the surrogate-gap dynamics (Fig. 9 / Thm 5.3): a tanh network
regressing a linear teacher, trained full batch, so that an effect of alpha is not hidden by the
minibatch noise of the demo task."""
from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from .loop import constant_rho_optimizer, plain_sgd, train_steps


def half_mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((out.squeeze(-1) - y) ** 2).mean()


def teacher_task(seed: int = 0, n: int = 64, dim: int = 8, width: int = 8):
    """(model, [(x, y)], criterion): 8 -> tanh(8) -> 1 without biases, float64, y = x . teacher."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g, dtype=torch.float64)
    y = (x @ torch.randn(dim, generator=g, dtype=torch.float64))
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(dim, width, bias=False), nn.Tanh(), nn.Linear(width, 1, bias=False)).double()
    return model, [(x, y)], half_mse


def train_full_batch(model: nn.Module, batches, criterion, method: Mapping, *, lr: float = 0.05, steps: int = 400,
                     on_step: Callable[[int, nn.Module], None] | None = None) -> None:
    """Plain SGD (no momentum, no weight decay) under ``method`` (the ``sam`` group's fields), one
    step per pass over ``batches`` (their mean loss), constant rho."""
    opt = constant_rho_optimizer(model, plain_sgd(lr), method)

    def mean_loss() -> torch.Tensor:
        return sum(criterion(model(x), y) for x, y in batches) / len(batches)

    for step, _ in enumerate(train_steps(opt, lambda i: [mean_loss], steps), start=1):
        if on_step is not None:
            on_step(step, model)
