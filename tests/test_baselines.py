"""Table 2's min(f_p + lam h) and Fig. 6's min(f, h) against their formulas, in float64."""
import pytest
import torch

import gsam
from gsam.optim.factory import build_optimizer
from support.nets import Recorder, assert_same_weights, batch, flat, mlp, reference_gsam, sgd_for_d, weights


@pytest.mark.parametrize("lam", [0.0, 0.1, 0.5, 2.0])
def test_weighted_gap_descends_on_fp_plus_lambda_h(lam):
    model = mlp()
    x, y = batch()
    w_adv, _, g, g_p = reference_gsam(model, x, y, rho=0.1, alpha=0.0)
    opt = gsam.WeightedGap(model.parameters(), sgd_for_d(model), rho=0.1, lam=lam)
    closure = Recorder(model, x, y)
    stats = opt.step(closure)
    assert len(closure.calls) == 2
    torch.testing.assert_close(flat(closure.grad_calls()[1]), w_adv, rtol=0, atol=1e-15)
    # grad (f_p + lam (f_p - f)) = (1 + lam) g_p - lam g
    torch.testing.assert_close(flat([p.grad for p in model.parameters()]), (1 + lam) * g_p - lam * g,
                               rtol=1e-13, atol=1e-15)
    assert stats.surrogate_gap.item() == pytest.approx(stats.perturbed_loss.item() - stats.loss.item(), abs=1e-12)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_min_f_h_descends_on_f_and_on_fp_orthogonally_to_g(alpha):
    model = mlp(seed=3)
    x, y = batch(seed=4)
    _, _, g, g_p = reference_gsam(model, x, y, rho=0.2, alpha=0.0)
    opt = gsam.GSAMMinF(model.parameters(), sgd_for_d(model), rho=0.2, alpha=alpha)
    opt.step(Recorder(model, x, y))
    d = flat([p.grad for p in model.parameters()])
    gp_perp = g_p - (g @ g_p) / (g @ g) * g
    torch.testing.assert_close(d, g + alpha * gp_perp, rtol=1e-13, atol=1e-15)
    # the added part is orthogonal to g: to first order it leaves f alone
    assert abs(((d - g) @ g).item()) < 1e-12 * g.norm().item() ** 2


def test_weighted_gap_with_lambda_zero_is_sam_and_sgd_momentum_sees_d():
    x, y = batch()
    finals = []
    for cls, kw in [(gsam.SAM, {}), (gsam.WeightedGap, {"lam": 0.0})]:
        model = mlp()
        opt = cls(model.parameters(), torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), rho=0.05, **kw)
        for _ in range(3):
            opt.step(Recorder(model, x, y))
        finals.append(weights(model))
    assert_same_weights(*finals)


def test_state_dict_round_trip_and_bad_values():
    model = mlp()
    opt = gsam.WeightedGap(model.parameters(), sgd_for_d(model), lam=0.3)
    opt.lam = 0.7
    other = gsam.WeightedGap(model.parameters(), sgd_for_d(model), lam=0.1)
    other.load_state_dict(opt.state_dict())
    assert other.lam == 0.7
    with pytest.raises(ValueError, match="lam"):
        gsam.WeightedGap(model.parameters(), sgd_for_d(model), lam=-0.1)
    with pytest.raises(ValueError, match="alpha"):
        gsam.GSAMMinF(model.parameters(), sgd_for_d(model), alpha=-1.0)


@pytest.mark.parametrize("name,cls,field,value", [("weighted_gap", gsam.WeightedGap, "lam", 0.1),
                                                  ("gsam_min_f", gsam.GSAMMinF, "alpha", 0.01)])
def test_config_group_builds_the_optimizer(compose, name, cls, field, value):
    cfg = compose(f"sam={name}")
    model = mlp()
    opt = build_optimizer(model, cfg.optimizer, cfg.sam)
    assert isinstance(opt, cls) and getattr(opt, field) == value and opt.rho == cfg.sam.rho_max
