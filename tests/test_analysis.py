"""gsam.analysis: sigma_max on batches, h and 2h/rho^2 (Lemma 3.3), cos(g, g_p), loss-surface slices."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gsam import analysis
from support.nets import assert_same_weights, batch, flat, mlp, unflat, weights


def half_mse(out, y):
    return 0.5 * ((out.squeeze(-1) - y) ** 2).mean()


def regression(eigenvalues=(5.0, 2.0, 1.0, 0.5, 0.1), n_batches=4, per_batch=50, seed=0):
    """A linear model with f(w) = mean over batches of 1/2 mean (x.w - y)^2, whose Hessian
    H = mean_b X_b^T X_b / |b| has the given spectrum (rows built from H's square root)."""
    g = torch.Generator().manual_seed(seed)
    d = len(eigenvalues)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    ev = torch.tensor(eigenvalues, dtype=torch.float64)
    n = n_batches * per_batch
    z, _ = torch.linalg.qr(torch.randn(n, d, generator=g, dtype=torch.float64))  # Z^T Z = I
    x = (n ** 0.5) * z @ torch.diag(ev.sqrt()) @ q.T  # X^T X / n = H
    w_star = torch.randn(d, generator=g, dtype=torch.float64)
    y = x @ w_star
    model = nn.Linear(d, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(w_star)
    batches = list(zip(x.split(per_batch), y.split(per_batch)))
    return model, batches, q, ev


def test_power_iteration_on_batches_finds_the_known_sigma_max_and_2h_over_rho2_agrees():
    model, batches, q, ev = regression()
    with torch.no_grad():  # Lemma 3.3's regime: next to the minimum, displaced along the top eigenvector
        model.weight += 1e-5 * q[:, 0]
    eig = analysis.dominant_eigenvalue(model, half_mse, batches, iters=500, tol=1e-12)
    assert eig.converged and eig.eigenvalue == pytest.approx(5.0, rel=1e-6)
    assert abs(float(flat(eig.vector) @ q[:, 0])) == pytest.approx(1.0, rel=1e-6)
    for gap in analysis.surrogate_gaps(model, half_mse, batches, [0.01, 0.05, 0.1, 0.5]):
        assert gap.sharpness == pytest.approx(eig.eigenvalue, rel=0.02)  # Lemma 3.3 is an approximation: to 2%
        assert gap.surrogate_gap == pytest.approx(gap.perturbed_loss - gap.loss)
        assert gap.cos == pytest.approx(1.0, abs=1e-9)  # g and g_p both along the top eigenvector


def test_2h_over_rho2_is_not_sigma_max_away_from_the_lemma_conditions():
    """Off the top eigenvector 2h/rho^2 = 2||g||/rho + g^T H g/||g||^2: exactly, for a quadratic."""
    model, batches, q, ev = regression()
    with torch.no_grad():
        model.weight += 1e-3 * q[:, 2]  # gradient along the eigenvalue-1 direction
    gap = analysis.surrogate_gap(model, half_mse, batches, 0.1)
    grad_norm = 1e-3 * 1.0
    assert gap.grad_norm == pytest.approx(grad_norm, rel=1e-8)
    assert gap.sharpness == pytest.approx(2 * grad_norm / 0.1 + 1.0, rel=1e-8)
    assert gap.sharpness < 0.5 * 5.0


def test_eigenvalue_matches_the_exact_hessian_of_the_mean_over_batches():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    g = torch.Generator().manual_seed(3)
    batches = [(torch.randn(n, 3, generator=g, dtype=torch.float64), torch.randint(0, 2, (n,), generator=g))
               for n in (7, 11, 5)]
    params = list(net.parameters())
    names = [n for n, _ in net.named_parameters()]

    def mean_loss(w):
        ws = unflat(w, params)
        return sum(F.cross_entropy(torch.func.functional_call(net, dict(zip(names, ws)), (x,)), y)
                   for x, y in batches) / len(batches)

    h = torch.autograd.functional.hessian(mean_loss, flat([p.detach() for p in params]))
    ev = torch.linalg.eigvalsh(h)
    eig = analysis.dominant_eigenvalue(net, F.cross_entropy, batches, iters=3000, tol=1e-12)
    assert eig.eigenvalue == pytest.approx(ev[ev.abs().argmax()].item(), rel=1e-6)


def test_bn_is_measured_in_eval_mode_modes_and_weights_restored_and_repeatable():
    model = mlp(seed=0, bn=True)
    x, y = batch(seed=1, n=64)
    model.train()
    model(x)  # running statistics differ from the batch statistics
    model.train()
    model[1].train(False)  # a mixed-mode model: every flag must come back as it was
    flags = [m.training for m in model.modules()]
    before = weights(model)
    bn_stats = [model[1].running_mean.clone(), model[1].running_var.clone()]
    batches = [(x[:32], y[:32]), (x[32:], y[32:])]
    a = analysis.dominant_eigenvalue(model, F.cross_entropy, batches, iters=30, seed=5)
    gaps = analysis.surrogate_gaps(model, F.cross_entropy, batches, [0.05, 0.2])
    assert [m.training for m in model.modules()] == flags
    assert_same_weights(before, weights(model))
    assert torch.equal(model[1].running_mean, bn_stats[0]) and torch.equal(model[1].running_var, bn_stats[1])
    model.train()  # the measurement does not depend on the mode the model is in
    b = analysis.dominant_eigenvalue(model, F.cross_entropy, batches, iters=30, seed=5)
    assert a.eigenvalue == b.eigenvalue and a.iterations == b.iterations
    # eval mode means BN on its running statistics: h equals the one of the model put in eval mode
    model.eval()
    ref = analysis.surrogate_gaps(model, F.cross_entropy, batches, [0.05, 0.2])
    assert [r.surrogate_gap for r in ref] == [gp.surrogate_gap for gp in gaps]


def test_gap_and_cos_against_an_independent_computation():
    model = mlp(seed=2)
    x, y = batch(seed=4, n=40)
    batches = [(x[:20], y[:20]), (x[20:], y[20:])]
    ps = list(model.parameters())
    names = [n for n, _ in model.named_parameters()]

    def f(w):
        ws = unflat(w, ps)
        return sum(F.cross_entropy(torch.func.functional_call(model, dict(zip(names, ws)), (xb,)), yb)
                   for xb, yb in batches) / 2

    w = flat([p.detach() for p in ps])
    g = torch.func.grad(f)(w)
    rho = 0.3
    w_adv = w + rho * g / g.norm()
    g_p = torch.func.grad(f)(w_adv)
    gap = analysis.surrogate_gap(model, F.cross_entropy, batches, rho)
    assert gap.loss == pytest.approx(f(w).item(), rel=1e-12)
    assert gap.perturbed_loss == pytest.approx(f(w_adv).item(), rel=1e-12)
    assert gap.surrogate_gap == pytest.approx((f(w_adv) - f(w)).item(), rel=1e-9)
    assert gap.sharpness == pytest.approx(2 * (f(w_adv) - f(w)).item() / rho**2, rel=1e-9)
    assert gap.cos == pytest.approx((g @ g_p / (g.norm() * g_p.norm())).item(), rel=1e-12)
    assert gap.surrogate_gap > 0  # Lemma 3.2 at this radius


def test_slices_restore_weights_bit_for_bit_and_match_direct_evaluation():
    model = mlp(seed=0, bn=True)
    x, y = batch(seed=1, n=48)
    model.train()
    model(x)
    batches = [(x[:24], y[:24]), (x[24:], y[24:])]
    before = weights(model)
    d1 = analysis.direction("gradient", model, F.cross_entropy, batches)
    d2 = analysis.direction("g_perp", model, F.cross_entropy, batches, rho=0.1)
    d3 = analysis.direction("random", model, F.cross_entropy, batches, seed=3)
    xs, ys = [-0.3, 0.0, 0.7], [-0.2, 0.5]
    grid = analysis.loss_slice_2d(model, F.cross_entropy, batches, d1, d2, xs, ys)
    line = analysis.loss_slice_1d(model, F.cross_entropy, batches, d3, xs)
    assert_same_weights(before, weights(model))
    model.eval()
    ps = list(model.parameters())
    names = [n for n, _ in model.named_parameters()]

    def f(ws):
        return sum(F.cross_entropy(torch.func.functional_call(model, dict(zip(names, ws)), (xb,)), yb).item()
                   for xb, yb in batches) / 2

    for i, b in enumerate(ys):
        for j, a in enumerate(xs):
            ws = [p.detach() + a * u + b * v for p, u, v in zip(ps, d1, d2)]
            assert grid[i, j].item() == pytest.approx(f(ws), rel=1e-10)
    assert line[1].item() == pytest.approx(f([p.detach() for p in ps]), rel=1e-12)
    assert line[2].item() == pytest.approx(f([p.detach() + 0.7 * u for p, u in zip(ps, d3)]), rel=1e-10)


def test_directions_gradient_g_perp_and_filter_normalised():
    model = mlp(seed=0)
    x, y = batch(seed=1, n=32)
    batches = [(x, y)]
    ps = list(model.parameters())
    g = analysis.gradient_direction(model, F.cross_entropy, batches)
    perp = analysis.g_perp_direction(model, F.cross_entropy, batches, rho=0.2)
    assert flat(g).norm().item() == pytest.approx(1.0) and flat(perp).norm().item() == pytest.approx(1.0)
    # g_perp is orthogonal to g_p = grad f(w + rho g/||g||)
    names = [n for n, _ in model.named_parameters()]
    w_adv = {n: p.detach() + 0.2 * u for n, p, u in zip(names, ps, g)}
    w_adv = {k: v.requires_grad_(True) for k, v in w_adv.items()}
    g_p = torch.autograd.grad(F.cross_entropy(torch.func.functional_call(model, w_adv, (x,)), y), list(w_adv.values()))
    assert abs((flat(perp) @ flat(g_p)).item()) < 1e-12 * flat(g_p).norm().item()
    r = analysis.random_filter_normalized_direction(model, seed=7)
    for p, d in zip(ps, r):
        if p.dim() < 2:
            assert torch.count_nonzero(d) == 0  # biases and norm parameters are not moved
        else:
            torch.testing.assert_close(d.norm(dim=1), p.detach().norm(dim=1), rtol=1e-12, atol=0)
    r2 = analysis.random_filter_normalized_direction(model, seed=7)
    assert_same_weights(r, r2)


def test_bad_input_is_a_clear_error():
    model = mlp()
    x, y = batch()
    with pytest.raises(ValueError, match="empty"):
        analysis.dominant_eigenvalue(model, F.cross_entropy, [])
    with pytest.raises(ValueError, match="pairs"):
        analysis.surrogate_gap(model, F.cross_entropy, [x], 0.1)
    with pytest.raises(ValueError, match="rhos"):
        analysis.surrogate_gaps(model, F.cross_entropy, [(x, y)], [0.1, -1.0])
    with pytest.raises(ValueError, match="direction must be one of"):
        analysis.direction("hessian", model, F.cross_entropy, [(x, y)])
    with pytest.raises(ValueError, match="d1"):
        analysis.loss_slice_1d(model, F.cross_entropy, [(x, y)], [torch.zeros(3)], [0.0])
    with pytest.raises(ValueError, match="iters"):
        analysis.dominant_eigenvalue(model, F.cross_entropy, [(x, y)], iters=0)


def test_power_iteration_runs_through_fused_attention():
    """timm ViTs call scaled_dot_product_attention, whose fused CPU/GPU kernels have no double backward."""
    import timm

    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=3, img_size=16, patch_size=8,
                            embed_dim=24, depth=1, num_heads=2)
    x = torch.randn(4, 3, 16, 16)
    y = torch.tensor([0, 1, 2, 0])
    fused = analysis.dominant_eigenvalue(vit, F.cross_entropy, [(x, y)], iters=3, tol=0.0, seed=1)
    for block in vit.blocks:
        block.attn.fused_attn = False  # timm's explicit softmax(q k^T) v: plain autograd, double backward included
    explicit = analysis.dominant_eigenvalue(vit, F.cross_entropy, [(x, y)], iters=3, tol=0.0, seed=1)
    assert fused.iterations == explicit.iterations == 3
    assert fused.eigenvalue == pytest.approx(explicit.eigenvalue, rel=1e-4)  # the same Hessian through either path
    assert fused.eigenvalue != 0.0


def test_rank_correlation_of_the_scripts():
    from gsam.studies.stats import rank_correlation

    assert rank_correlation([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert rank_correlation([1, 2, 3, 4], [4, 1, 2, 0]) == pytest.approx(-0.8)  # 1 - 6*18/(4*15)
    assert rank_correlation([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(3 / 10**0.5)  # ties: mean ranks
    assert rank_correlation([1.0], [2.0]) != rank_correlation([1.0], [2.0])  # NaN
