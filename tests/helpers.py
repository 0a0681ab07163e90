"""Small models, closures and independent reference computations shared by the optimizer tests."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call


def mlp(seed: int = 0, dtype=torch.float64, bn: bool = False, width: int = 16) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Linear(6, width), nn.BatchNorm1d(width) if bn else nn.LayerNorm(width), nn.Tanh(),
              nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 4)]
    return nn.Sequential(*layers).to(dtype)


def batch(seed: int = 1, n: int = 32, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g, dtype=dtype), torch.randint(0, 4, (n,), generator=g)


class Recorder:
    """A closure following the convention; records for every call whether grad was enabled and the
    weights it saw."""

    def __init__(self, model, x, y, loss_fn=F.cross_entropy, backward=None):
        self.model, self.x, self.y, self.loss_fn = model, x, y, loss_fn
        self.backward = backward or (lambda loss: loss.backward())
        self.calls: list[tuple[bool, list[torch.Tensor]]] = []

    def __call__(self):
        self.calls.append((torch.is_grad_enabled(), [p.detach().clone() for p in self.model.parameters()]))
        loss = self.loss_fn(self.model(self.x), self.y)
        if torch.is_grad_enabled():
            self.backward(loss)
        return loss

    def grad_calls(self):
        return [w for enabled, w in self.calls if enabled]

    def probe_calls(self):
        return [w for enabled, w in self.calls if not enabled]


def loss_at(model, x, y, weights) -> torch.Tensor:
    names = [n for n, _ in model.named_parameters()]
    return F.cross_entropy(functional_call(model, dict(zip(names, weights)), (x,)), y)


def grad_at(model, x, y, weights) -> list[torch.Tensor]:
    """g = grad f(weights), by autograd on a functional call (independent of the optimizer code)."""
    weights = [w.detach().clone().requires_grad_(True) for w in weights]
    return list(torch.autograd.grad(loss_at(model, x, y, weights), weights))


def flat(ts) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in ts])


def unflat(v: torch.Tensor, like) -> list[torch.Tensor]:
    out, i = [], 0
    for t in like:
        out.append(v[i:i + t.numel()].view_as(t))
        i += t.numel()
    return out


def weights(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def sgd_for_d(model):
    """A base optimizer that does not move the weights, so p.grad after step() is the update d."""
    return torch.optim.SGD(model.parameters(), lr=0.0)
