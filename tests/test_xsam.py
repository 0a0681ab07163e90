"""XSAM against the update rule of the official code (k ascent steps, slerp, alpha* search)."""
import math

import pytest
import torch

import gsam
from gsam.optim.xsam import DEFAULT_ALPHA_GRID
from support.nets import Recorder, assert_same_weights, batch, flat, grad_at, loss_at, mlp, sgd_for_d, unflat, weights

EPS = 1e-12


def slerp(v0, v1, alpha):
    """v(alpha) of Eq. 6 with the official code's unit vectors (eps in their norms)."""
    phi = torch.arccos((v0 @ v1).clamp(-1, 1))
    return (torch.sin((1 - alpha) * phi) * v0 + torch.sin(alpha * phi) * v1) / torch.sin(phi), phi


def test_k1_alpha1_without_search_is_sam_bit_for_bit():
    x, y = batch()
    runs = []
    for cls, kw in [(gsam.SAM, {}), (gsam.XSAM, dict(steps=1, alpha=1.0, search_every=0))]:
        model = mlp(bn=True)
        base = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
        opt = cls(model.parameters(), base, rho=0.05, model=model, **kw)
        for _ in range(4):
            opt.step(Recorder(model, x, y))
        runs.append(weights(model) + [b.clone() for b in model.buffers()])
    assert_same_weights(*runs)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0, 1.5])
def test_k_step_ascent_and_slerp_update(alpha):
    model = mlp(seed=2)
    x, y = batch(seed=3)
    rho, k = 0.3, 3
    opt = gsam.XSAM(model.parameters(), sgd_for_d(model), rho=rho, steps=k, alpha=alpha, search_every=0)
    closure = Recorder(model, x, y)
    stats = opt.step(closure)
    points = [flat(w) for w in closure.grad_calls()]
    assert len(closure.calls) == k + 1 and len(points) == k + 1  # no search: exactly k+1 passes
    like = list(model.parameters())
    for i in range(k):  # theta_{i+1} = theta_i + (rho/k) g_i / (||g_i|| + eps)
        g_i = flat(grad_at(model, x, y, unflat(points[i], like)))
        torch.testing.assert_close(points[i + 1], points[i] + rho / k * g_i / (g_i.norm() + EPS), rtol=0, atol=1e-15)
    disp = points[k] - points[0]
    assert disp.norm() <= rho + 1e-12
    g_k = flat(grad_at(model, x, y, unflat(points[k], like)))
    v, phi = slerp(disp / (disp.norm() + EPS), g_k / (g_k.norm() + EPS), alpha)
    d = flat([p.grad for p in model.parameters()])
    # eps = 1e-12 sits in the unit vectors' norms, so agreement is to ~eps/||.|| relative
    torch.testing.assert_close(d, g_k.norm() * v, rtol=1e-10, atol=1e-14)
    # ||d|| = ||g_k|| and the angle between d and v0 is alpha * phi
    assert d.norm().item() == pytest.approx(g_k.norm().item(), rel=1e-10)
    angle = torch.arccos((d @ disp / (d.norm() * disp.norm())).clamp(-1, 1))
    assert angle.item() == pytest.approx(alpha * phi.item(), abs=1e-7)
    assert stats.cos.item() == pytest.approx(torch.cos(phi).item(), rel=1e-10)
    if alpha == 1.0:
        torch.testing.assert_close(d, g_k, rtol=0, atol=1e-15)  # k-step SAM


def test_alpha_search_picks_the_argmax_of_the_probe_losses():
    model = mlp(seed=4)
    x, y = batch(seed=5)
    rho, rho_probe, k = 0.2, 0.5, 2
    opt = gsam.XSAM(model.parameters(), sgd_for_d(model), rho=rho, rho_probe=rho_probe, steps=k, search_every=1)
    closure = Recorder(model, x, y)
    stats = opt.step(closure)
    assert stats.searched
    probes = closure.probe_calls()
    assert len(probes) == len(DEFAULT_ALPHA_GRID) == 21
    assert len(closure.grad_calls()) == k + 1
    like = list(model.parameters())
    points = [flat(w) for w in closure.grad_calls()]
    disp = points[k] - points[0]
    g_k = flat(grad_at(model, x, y, unflat(points[k], like)))
    losses = []
    for alpha, probe in zip(DEFAULT_ALPHA_GRID, probes):
        v, _ = slerp(disp / (disp.norm() + EPS), g_k / (g_k.norm() + EPS), alpha)
        torch.testing.assert_close(flat(probe), points[0] + rho_probe * v, rtol=0, atol=1e-12)
        losses.append(loss_at(model, x, y, unflat(points[0] + rho_probe * v, like)).item())
    best = DEFAULT_ALPHA_GRID[max(range(len(losses)), key=lambda i: (losses[i], -i))]
    assert opt.alpha == best == stats.alpha
    torch.testing.assert_close(opt.last_probe_losses.double(), torch.tensor(losses, dtype=torch.float64), rtol=1e-6, atol=0)
    # the update uses the alpha* just found
    v, _ = slerp(disp / (disp.norm() + EPS), g_k / (g_k.norm() + EPS), best)
    torch.testing.assert_close(flat([p.grad for p in model.parameters()]), g_k.norm() * v, rtol=1e-10, atol=1e-14)


def test_search_schedule_first_step_then_every_n():
    model = mlp(seed=6)
    x, y = batch(seed=7)
    base = torch.optim.SGD(model.parameters(), lr=0.05)
    opt = gsam.XSAM(model.parameters(), base, rho=0.05, rho_probe=0.1, steps=1, search_every=3)
    searched, counts = [], []
    for _ in range(7):
        closure = Recorder(model, x, y)
        searched.append(opt.step(closure).searched)
        counts.append(len(closure.calls))
    assert searched == [True, False, False, True, False, False, True]
    assert counts == [2 + 21 if s else 2 for s in searched]
    assert opt.searches == 3
    never = gsam.XSAM(model.parameters(), torch.optim.SGD(model.parameters(), lr=0.05), search_every=0)
    assert not any(never.step(Recorder(model, x, y)).searched for _ in range(3))


def test_the_loops_hook_gives_rho_t_the_epoch_cadence_and_the_search_images():
    """before_step: rho_t from the lr between rho_min and rho_max (Algorithm 1, step 0), the search at the first
    step of every search_every_epochs-th epoch on the loop's counters, on the head of the batch it offers (the
    search's own k + 1 passes and 21 probes go there; the step's closure keeps its 2 passes)."""
    model = mlp(seed=6)
    x, y = batch(seed=7)
    opt = gsam.XSAM(model.parameters(), torch.optim.SGD(model.parameters(), lr=0.05), rho=0.04, rho_min=0.02,
                    rho_probe=0.1, search_every_epochs=2, search_images=8)
    asked, heads, rows = [], [], []
    for epoch, batch_in_epoch, lr in [(0, 0, 0.1), (0, 1, 0.1), (1, 0, 0.055), (2, 0, 0.01), (2, 1, 0.01)]:
        def head(n):
            asked.append(n)
            heads.append(Recorder(model, x[:n], y[:n]))
            return heads[-1]
        opt.before_step(gsam.StepClock(lr, lr_max=0.1, lr_min=0.01, epoch=epoch, batch_in_epoch=batch_in_epoch,
                                       head=head))
        closure = Recorder(model, x, y)
        stats = opt.step(closure)
        rows.append((stats.searched, stats.rho, len(closure.calls)))
    assert rows == [(True, 0.04, 2), (False, 0.04, 2), (False, pytest.approx(0.03), 2), (True, 0.02, 2),
                    (False, 0.02, 2)]
    assert asked == [8, 8] and [len(h.calls) for h in heads] == [2 + 21, 2 + 21]


def test_probes_and_ascent_passes_leave_batchnorm_statistics_alone():
    model = mlp(seed=8, bn=True)
    x, y = batch(seed=9)
    reference = mlp(seed=8, bn=True)
    reference(x)  # one train-mode forward at theta_0: what the clean pass must do, and nothing else
    opt = gsam.XSAM(model.parameters(), sgd_for_d(model), rho=0.1, steps=3, search_every=1, model=model)
    opt.step(Recorder(model, x, y))
    assert_same_weights(model.buffers(), reference.buffers())


def test_slerp_degenerate_angle_is_the_linear_limit():
    from gsam.optim.xsam import slerp_coefficients
    c0, c1 = slerp_coefficients(0.3, torch.tensor(0.0, dtype=torch.float64))
    assert (c0.item(), c1.item()) == (pytest.approx(0.7), pytest.approx(0.3))
    phi = torch.tensor(1e-4, dtype=torch.float64)  # just above the threshold: close to the limit
    c0, c1 = slerp_coefficients(0.3, phi)
    assert c0.item() == pytest.approx(0.7, rel=1e-7) and c1.item() == pytest.approx(0.3, rel=1e-7)
    c0, c1 = slerp_coefficients(0.5, torch.tensor(math.pi / 2, dtype=torch.float64))
    assert c0.item() == pytest.approx(math.sqrt(0.5)) and c1.item() == pytest.approx(math.sqrt(0.5))
