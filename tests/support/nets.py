"""Small models, closures and independent reference computations shared by the optimizer tests (and by the
torchrun workers, which run the same models on every rank)."""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

import gsam


def mlp(seed: int = 0, dtype=torch.float64, bn: bool = False, width: int = 16) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Linear(6, width), nn.BatchNorm1d(width) if bn else nn.LayerNorm(width), nn.Tanh(),
              nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 4)]
    return nn.Sequential(*layers).to(dtype)


def batch(seed: int = 1, n: int = 32, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g, dtype=dtype), torch.randint(0, 4, (n,), generator=g)


class Recorder:
    """The closure of the convention (the loss; its backward only while grad is enabled), written once for
    every test; records for every call whether grad was enabled and the weights it saw.

    ``micro``: the batch in that many micro-batches, each loss / micro (gradient accumulation inside the
    closure). ``autocast``: the forward under CPU autocast to that dtype. ``before``: called first on every
    call (a test that changes the model between passes). ``keep_weights=False`` records no weight copies (a
    real model: a copy per pass would cost more than the step)."""

    def __init__(self, model, x, y, loss_fn=F.cross_entropy, backward=None, *, micro: int = 1, autocast=None,
                 before=None, keep_weights: bool = True):
        self.model, self.x, self.y, self.loss_fn = model, x, y, loss_fn
        self.backward = backward or (lambda loss: loss.backward())
        self.micro, self.autocast, self.before, self.keep_weights = micro, autocast, before, keep_weights
        self.calls: list[tuple[bool, list[torch.Tensor]]] = []

    def __call__(self):
        if self.before is not None:
            self.before()
        seen = [p.detach().clone() for p in self.model.parameters()] if self.keep_weights else []
        self.calls.append((torch.is_grad_enabled(), seen))
        total = 0.0
        for x, y in self._batches():
            with torch.autocast("cpu", dtype=self.autocast) if self.autocast else contextlib.nullcontext():
                loss = self.loss_fn(self.model(x), y) / self.micro
            if torch.is_grad_enabled():
                self.backward(loss)
            total = loss if self.micro == 1 else total + loss.detach()
        return total

    def _batches(self):
        if self.micro == 1:
            return [(self.x, self.y)]
        return list(zip(self.x.chunk(self.micro), self.y.chunk(self.micro)))

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


def assert_same_weights(a, b) -> None:
    """Bit for bit the same: two state dicts (the same keys; a failure names the key) or two sequences of
    tensors (the same length; a failure names the position)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), set(a) ^ set(b)
        pairs = [(k, a[k], b[k]) for k in a]
    else:
        a, b = list(a), list(b)
        assert len(a) == len(b), (len(a), len(b))
        pairs = [(i, u, v) for i, (u, v) in enumerate(zip(a, b))]
    for key, u, v in pairs:
        assert torch.equal(u, v), key


def assert_same_optimizer_state(a: dict, b: dict) -> None:
    """Two trainer checkpoints' base-optimizer states (momentum buffers, Adam moments), bit for bit."""
    sa, sb = a["optimizer"]["base_optimizer"]["state"], b["optimizer"]["base_optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        assert_same_weights(sa[k], sb[k])


def weights(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def sgd_for_d(model):
    """A base optimizer that does not move the weights, so p.grad after step() is the update d."""
    return torch.optim.SGD(model.parameters(), lr=0.0)


EPS = 1e-12


def reference_gsam(model, x, y, rho, alpha, adaptive=False):
    """Algorithm 1 written out on flat float64 vectors: returns (w_adv, d, g, g_p)."""
    w = weights(model)
    g = flat(grad_at(model, x, y, w))
    wf = flat(w)
    if adaptive:
        e = rho * wf**2 * g / (torch.linalg.vector_norm(wf.abs() * g) + EPS)
    else:
        e = rho * g / (torch.linalg.vector_norm(g) + EPS)
    w_adv = wf + e
    g_p = flat(grad_at(model, x, y, unflat(w_adv, w)))
    g_perp = g - (g @ g_p) / (g_p @ g_p) * g_p
    return w_adv, g_p - alpha * g_perp, g, g_p


def looksam_g_v(d, g):
    """g_v = d - (<g, d>/||g||^2) g (LookSAM, Algorithm 1, with d = g_s)."""
    return d - (g @ d) / (g @ g) * g


# the sharpness-aware methods every mechanics test runs (XSAM: k=2, alpha* searched every 2 steps)
METHODS = [
    (gsam.SAM, {}),
    (gsam.SAM, {"adaptive": True}),
    (gsam.GSAM, {"alpha": 0.4}),
    (gsam.XSAM, {"steps": 2, "search_every": 2, "rho_probe": 0.1}),
]
IDS = ["sam", "asam", "gsam", "xsam"]


class TwoBranches(nn.Module):
    """Branch b is used only when asked: its parameters then have grad None."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(6, 4).double()
        self.b = nn.Linear(6, 4).double()
        self.use_b = True

    def forward(self, x):
        return self.a(x) + self.b(x) if self.use_b else self.a(x)
