"""rho tied to the lr (Algorithm 1, step 0), the lr schedule, and sharpness (Lemma 3.3)."""
import pytest
import torch
from torch import nn

import gsam
from support.nets import Recorder


def test_rho_follows_the_lr_of_the_same_step():
    kw = dict(lr_max=3e-3, lr_min=3e-5, rho_max=0.6, rho_min=0.1)
    assert gsam.rho_from_lr(3e-3, **kw) == pytest.approx(0.6)
    assert gsam.rho_from_lr(3e-5, **kw) == pytest.approx(0.1)
    mid = (3e-3 + 3e-5) / 2
    assert gsam.rho_from_lr(mid, **kw) == pytest.approx(0.35)
    assert gsam.rho_from_lr(0.0, **kw) == 0.1  # warm-up from lr = 0 < lr_min: clamped, never < 0
    assert gsam.rho_from_lr(1.0, **kw) == 0.6
    assert gsam.rho_from_lr(0.1, lr_max=0.1, lr_min=0.1, rho_max=0.05, rho_min=0.05) == 0.05  # constant rho
    with pytest.raises(ValueError, match="rho_min"):
        gsam.rho_from_lr(0.1, lr_max=0.1, lr_min=0.0, rho_max=0.05, rho_min=0.1)
    with pytest.raises(ValueError, match="lr_min"):
        gsam.rho_from_lr(0.1, lr_max=0.0, lr_min=0.1, rho_max=0.05, rho_min=0.01)


def test_lr_warmup_then_linear_or_cosine_decay():
    kw = dict(total_steps=100, warmup_steps=10, lr_max=1.6, lr_min=0.016)
    lrs = [gsam.lr_at(s, **kw) for s in range(100)]
    assert lrs[0] == pytest.approx(0.16) and lrs[9] == pytest.approx(1.6)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:10]))
    assert all(a > b for a, b in zip(lrs[10:], lrs[11:]))
    assert gsam.lr_at(100, **kw) == pytest.approx(0.016)
    assert gsam.lr_at(55, **kw) == pytest.approx(1.6 + (0.016 - 1.6) * 0.5)
    assert gsam.lr_at(55, decay="cosine", **kw) == pytest.approx(0.016 + 0.5 * (1.6 - 0.016))
    with pytest.raises(ValueError, match="decay"):
        gsam.lr_at(20, decay="step", **kw)
    with pytest.raises(ValueError, match="warmup_steps"):
        gsam.lr_at(0, total_steps=10, warmup_steps=11, lr_max=1.0, lr_min=0.0)


class Quadratic(nn.Module):
    """f(w) = 1/2 (w - w*)^T H (w - w*) with a known spectrum."""

    def __init__(self, eigenvalues, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        n = len(eigenvalues)
        q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
        self.register_buffer("q", q)
        self.register_buffer("hessian", q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ q.T)
        self.register_buffer("w_star", torch.randn(n, generator=g, dtype=torch.float64))
        self.w = nn.Parameter(self.w_star.clone())

    def forward(self, x=None):  # x: ignored; the loss is f(w) itself
        r = self.w - self.w_star
        return 0.5 * r @ self.hessian @ r


def test_surrogate_gap_estimate_and_power_iteration_find_sigma_max():
    sigma = [5.0, 2.0, 1.0, 0.5, 0.1]
    model = Quadratic(sigma)
    with torch.no_grad():  # near the minimum, off it along the top eigenvector (Lemma 3.3's regime)
        model.w += 1e-6 * model.q[:, 0] + 1e-9 * model.q[:, 3]

    closure = Recorder(model, None, None, loss_fn=lambda loss, _: loss)
    for cls in (gsam.SAM, gsam.GSAM):
        opt = cls(model.parameters(), torch.optim.SGD(model.parameters(), lr=0.0), rho=0.05)
        sharpness = opt.step(closure).sharpness.item()
        assert sharpness == pytest.approx(5.0, rel=0.02)
    eig, vec = gsam.hessian_max_eigenvalue(model, list(model.parameters()), iters=500, tol=1e-12,
                                           generator=torch.Generator().manual_seed(0))
    assert eig == pytest.approx(5.0, rel=1e-6)
    assert abs(float(vec[0] @ model.q[:, 0])) == pytest.approx(1.0, rel=1e-5)


def test_power_iteration_on_a_network_matches_the_exact_hessian():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    x = torch.randn(20, 3, dtype=torch.float64)
    y = torch.randn(20, 1, dtype=torch.float64)
    params = list(net.parameters())
    shapes = [p.shape for p in params]
    sizes = [p.numel() for p in params]

    def loss_of(flat_w):
        ws = [t.view(s) for t, s in zip(flat_w.split(sizes), shapes)]
        names = [n for n, _ in net.named_parameters()]
        out = torch.func.functional_call(net, dict(zip(names, ws)), (x,))
        return ((out - y) ** 2).mean()

    h = torch.autograd.functional.hessian(loss_of, torch.cat([p.detach().reshape(-1) for p in params]))
    ev = torch.linalg.eigvalsh(h)
    dominant = ev[ev.abs().argmax()].item()
    eig, _ = gsam.hessian_max_eigenvalue(lambda: ((net(x) - y) ** 2).mean(), params, iters=2000, tol=1e-12,
                                         generator=torch.Generator().manual_seed(1))
    assert eig == pytest.approx(dominant, rel=1e-4)
