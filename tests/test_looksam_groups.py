"""LookSAM and LookGSAM under perturbation groups: the reuse step's push along g_v, relative to the step's mean
gradient, is the reuse strength alpha whatever the number of groups (gsam/optim/looksam.py, the reuse rule).

A tiny float64 net on 256 images with random labels, so that each group's gradient is mostly noise: rescaled by
one group's own ||g_g||, which the noise inflates as the groups shrink, the push grew with the group count: 0.70,
0.77, 0.85, 1.08 with 1, 2, 4, 8 groups at alpha = 0.7 (what this test printed on the rule before)."""
import pytest
import torch

import gsam
from support.nets import Recorder, batch, flat, grad_at, mlp, sgd_for_d, weights

ALPHA, RHO, N = 0.7, 0.05, 256
GROUP_COUNTS = (1, 2, 4, 8)


def push_along_g_v(groups: int, gsam_alpha: float) -> tuple[float, float]:
    """A refresh then a reuse step on the same images and weights (lr 0): (the push of the reuse step along
    g_v over ||the step's mean gradient||, what of d - g is not along g_v, relative to ||g||)."""
    model = mlp(seed=0)
    opt = gsam.LookSAM(model.parameters(), sgd_for_d(model), rho=RHO, k=2, alpha=ALPHA, gsam_alpha=gsam_alpha)
    x, y = batch(seed=3, n=N)
    closures = [Recorder(model, xg, yg, keep_weights=False) for xg, yg in zip(x.chunk(groups), y.chunk(groups))]
    opt.step(closures)  # refresh: stores g_v, the mean over the groups
    opt.step(closures)  # reuse: d = g + push along g_v
    d = flat([p.grad for p in model.parameters()])
    g = flat(grad_at(model, x, y, weights(model)))  # the whole batch's mean loss: the mean of the groups' g
    g_v = flat([opt._gv[p] for p in model.parameters()])
    unit = g_v / g_v.norm()
    push = (d - g) @ unit
    return (push / g.norm()).item(), ((d - g - push * unit).norm() / g.norm()).item()


@pytest.mark.parametrize("gsam_alpha", [0.0, 0.4], ids=["looksam", "lookgsam"])
def test_the_push_along_g_v_does_not_grow_with_the_number_of_groups(gsam_alpha):
    measured = {G: push_along_g_v(G, gsam_alpha) for G in GROUP_COUNTS}
    pushes = {G: round(p, 4) for G, (p, _) in measured.items()}
    for G, (push, off_axis) in measured.items():
        assert off_axis < 1e-12, (G, off_axis)  # d - g lies along g_v
        assert push == pytest.approx(ALPHA, rel=1e-10), f"push / ||mean g|| by group count: {pushes}"
