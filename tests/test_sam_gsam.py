"""SAM, ASAM and GSAM against Algorithm 1 of the GSAM paper, in float64."""
import pytest
import torch

import gsam
from support.nets import (EPS, Recorder, assert_same_weights, batch, flat, grad_at, mlp, reference_gsam, sgd_for_d,
                          weights)


@pytest.mark.parametrize("alpha", [0.0, 0.01, 0.4, 1.0, 2.5])
def test_gsam_update_is_algorithm_1(alpha):
    model = mlp()
    x, y = batch()
    w_adv_ref, d_ref, g, g_p = reference_gsam(model, x, y, rho=0.1, alpha=alpha)
    opt = gsam.GSAM(model.parameters(), sgd_for_d(model), rho=0.1, alpha=alpha, model=model)
    closure = Recorder(model, x, y)
    stats = opt.step(closure)
    assert len(closure.calls) == 2
    torch.testing.assert_close(flat(closure.grad_calls()[1]), w_adv_ref, rtol=0, atol=1e-15)
    d = flat([p.grad for p in model.parameters()])
    torch.testing.assert_close(d, d_ref, rtol=1e-13, atol=1e-15)
    # diagnostics against the same reference
    assert stats.grad_norm.item() == pytest.approx(torch.linalg.vector_norm(g).item(), rel=1e-13)
    assert stats.perturbed_grad_norm.item() == pytest.approx(torch.linalg.vector_norm(g_p).item(), rel=1e-13)
    cos = (g @ g_p / (g.norm() * g_p.norm())).item()
    assert stats.cos.item() == pytest.approx(cos, rel=1e-13)
    assert stats.surrogate_gap.item() == pytest.approx(stats.perturbed_loss.item() - stats.loss.item(), abs=1e-7)
    assert stats.sharpness.item() == pytest.approx(2 * stats.surrogate_gap.item() / 0.1**2, rel=1e-6)


def test_g_perp_is_orthogonal_to_g_p_and_g_decomposes():
    model = mlp(seed=3)
    x, y = batch(seed=4)
    alpha = 0.7
    _, _, g, g_p = reference_gsam(model, x, y, rho=0.2, alpha=alpha)
    opt = gsam.GSAM(model.parameters(), sgd_for_d(model), rho=0.2, alpha=alpha)
    opt.step(Recorder(model, x, y))
    d = flat([p.grad for p in model.parameters()])
    g_perp = (g_p - d) / alpha  # d = g_p - alpha g_perp
    assert abs((g_perp @ g_p).item()) < 1e-14 * g_perp.norm().item() * g_p.norm().item() * 1e3
    g_par = g - g_perp
    cross = torch.linalg.vector_norm(g_par / g_par.norm() - g_p / g_p.norm() * torch.sign(g_par @ g_p))
    assert cross.item() < 1e-12  # g_par is parallel to g_p


def test_gsam_matches_the_official_pytorch_formula_within_its_eps():
    """juntang-zhuang/GSAM puts eps into the cosine and ||g_p||: d differs from ours by O(1e-12)."""
    model = mlp(seed=5)
    x, y = batch(seed=6)
    _, _, g, g_p = reference_gsam(model, x, y, rho=0.05, alpha=0.4)
    cos = (g @ g_p) / (g_p.norm() * g.norm() + EPS)
    vertical = g - cos * g.norm() * g_p / (g_p.norm() + EPS)
    d_official = g_p - 0.4 * vertical
    opt = gsam.GSAM(model.parameters(), sgd_for_d(model), rho=0.05, alpha=0.4)
    opt.step(Recorder(model, x, y))
    torch.testing.assert_close(flat([p.grad for p in model.parameters()]), d_official, rtol=0, atol=1e-10)


def test_alpha_zero_is_sam_bit_for_bit():
    x, y = batch()
    runs = []
    for cls, kw in [(gsam.SAM, {}), (gsam.GSAM, {"alpha": 0.0})]:
        model = mlp()
        base = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
        opt = cls(model.parameters(), base, rho=0.05, model=model, **kw)
        for _ in range(4):
            opt.step(Recorder(model, x, y))
        runs.append(weights(model))
    assert_same_weights(*runs)


def test_sam_update_is_g_p_and_weight_decay_enters_only_the_base_optimizer():
    model = mlp(seed=7)
    x, y = batch(seed=8)
    w0 = weights(model)
    _, _, _, g_p = reference_gsam(model, x, y, rho=0.05, alpha=0.0)
    lr, wd = 0.1, 0.3
    opt = gsam.SAM(model.parameters(), torch.optim.SGD(model.parameters(), lr=lr, weight_decay=wd), rho=0.05)
    closure = Recorder(model, x, y)
    opt.step(closure)
    expected = flat(w0) - lr * (g_p + wd * flat(w0))
    torch.testing.assert_close(flat(weights(model)), expected, rtol=0, atol=1e-14)
    # the weights the second pass saw were w + rho g/||g||: the decay did not enter g
    g = flat(grad_at(model, x, y, w0))
    torch.testing.assert_close(flat(closure.grad_calls()[1]), flat(w0) + 0.05 * g / (g.norm() + EPS), rtol=0, atol=1e-15)


@pytest.mark.parametrize("cls", [gsam.SAM, gsam.GSAM])
def test_asam_perturbation(cls):
    """adaptive=True: e = rho w^2 g / (|| |w| g || + eps), the PyTorch references' ASAM."""
    model = mlp(seed=9)
    x, y = batch(seed=10)
    kw = {"alpha": 0.3} if cls is gsam.GSAM else {}
    w_adv_ref, d_ref, _, _ = reference_gsam(model, x, y, rho=0.5, alpha=kw.get("alpha", 0.0), adaptive=True)
    opt = cls(model.parameters(), sgd_for_d(model), rho=0.5, adaptive=True, **kw)
    closure = Recorder(model, x, y)
    opt.step(closure)
    torch.testing.assert_close(flat(closure.grad_calls()[1]), w_adv_ref, rtol=0, atol=1e-15)
    torch.testing.assert_close(flat([p.grad for p in model.parameters()]), d_ref, rtol=1e-13, atol=1e-15)


def test_weights_restored_exactly_from_a_copy():
    """After the perturbed pass the base optimizer sees w bit for bit (lr = 0 keeps them)."""
    model = mlp(seed=11)
    x, y = batch(seed=12)
    w0 = weights(model)
    for cls in (gsam.SAM, gsam.GSAM, gsam.XSAM):
        opt = cls(model.parameters(), sgd_for_d(model), rho=0.37)
        opt.step(Recorder(model, x, y))
        assert_same_weights(w0, model.parameters())


def test_float64_stays_float64_in_norms():
    """A perturbation of 1e-9 relative size survives only with float64 norms and dot products."""
    model = mlp(seed=13)
    x, y = batch(seed=14)
    opt = gsam.GSAM(model.parameters(), sgd_for_d(model), rho=1e-9, alpha=0.5)
    stats = opt.step(Recorder(model, x, y))
    assert stats.grad_norm.dtype == torch.float64 and stats.cos.dtype == torch.float64
    _, d_ref, _, _ = reference_gsam(model, x, y, rho=1e-9, alpha=0.5)
    torch.testing.assert_close(flat([p.grad for p in model.parameters()]), d_ref, rtol=1e-12, atol=1e-16)
