"""The one training loop of the studies (demo task, synthetic teacher, 2-D toy): the optimizer factory's
methods at constant rho, a closure per perturbation group, the lr set before each step when scheduled.

The trainer (gsam.run.engine) is the real loop; this one is for tasks small enough to train in seconds, where
the numbers must come from the same optimizers the trainer uses.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from gsam.optim import SharpnessAware, StepStats
from gsam.optim.factory import build_optimizer

Loss = Callable[[], torch.Tensor]


def constant_rho_optimizer(model: nn.Module, base: Mapping, method: Mapping) -> SharpnessAware:
    """``method`` (the ``sam`` config group's fields, e.g. {"name": "gsam", "rho_max": 0.1, "alpha": 0.2};
    "none" is the base optimizer alone) over ``base`` (the ``optimizer`` group's), rho held at rho_max: the
    studies compare methods at one radius, without the trainer's lr-tied rho schedule."""
    return build_optimizer(model, base, {"rho_min": method.get("rho_max"), **method})


def plain_sgd(lr: float, momentum: float = 0.0) -> dict:
    """The ``optimizer`` fields of SGD without weight decay: the base of the noise-free tasks (toy, synthetic)."""
    return {"name": "sgd", "lr": lr, "momentum": momentum, "weight_decay": 0.0}


def _closure(opt: SharpnessAware, loss: Loss) -> Callable[[], torch.Tensor]:
    """The closure convention of gsam/optim/base.py: the forward always, the backward when grad is on."""
    def closure():
        value = loss()
        if torch.is_grad_enabled():
            opt.backward(value)
        return value
    return closure


def train_steps(opt: SharpnessAware, losses: Callable[[int], Sequence[Loss]], steps: int, *,
                lr: Callable[[int], float] | None = None) -> Iterator[StepStats]:
    """``steps`` steps of ``opt``; step ``i`` (0-based) has one perturbation group per loss of ``losses(i)``
    and, when ``lr`` is given, every parameter group's lr set to ``lr(i)`` first. Yields each step's stats
    (a generator: the caller records what it needs between steps, and ``losses`` is called in step order)."""
    for i in range(steps):
        if lr is not None:
            for group in opt.param_groups:
                group["lr"] = lr(i)
        yield opt.step([_closure(opt, loss) for loss in losses(i)])
