"""What every method must get right around the update rule: untouched parameters, BatchNorm,
gradient accumulation, checkpoints, mixed precision, clipping, non-finite steps, bad arguments."""
import io

import pytest
import torch
import torch.nn.functional as F

import gsam
from support.nets import IDS, METHODS, Recorder, TwoBranches, assert_same_weights, batch, flat, mlp, sgd_for_d, weights


@pytest.mark.parametrize("cls,kw", METHODS, ids=IDS)
def test_parameters_without_grad_are_never_moved(cls, kw):
    """The official GSAM code shifts such a parameter by a stale -e_w; here it cannot move."""
    model = TwoBranches()
    x, y = batch()
    base = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    opt = cls(model.parameters(), base, rho=0.1, **kw)
    opt.step(Recorder(model, x, y))  # b used: it gets momentum state
    model.use_b = False
    a_before, b_before = weights(model.a), weights(model.b)
    for _ in range(3):
        opt.step(Recorder(model, x, y))
    assert_same_weights(b_before, model.b.parameters())
    assert not torch.equal(a_before[0], model.a.weight)  # a still trains
    assert all(p.grad is None for p in model.b.parameters())


def test_parameter_reached_only_by_the_clean_pass_counts_as_zero_in_later_passes():
    model = TwoBranches()
    x, y = batch()
    closure = Recorder(model, x, y, before=lambda: setattr(model, "use_b", not closure.calls))  # b: clean pass only
    w0 = weights(model.b)
    opt = gsam.GSAM(model.parameters(), sgd_for_d(model), rho=0.1, alpha=0.5)
    opt.step(closure)
    assert_same_weights(w0, model.b.parameters())  # restored exactly
    # with g_p = 0 on b: d_b = g_p,b - alpha (g_b - c g_p,b) = -alpha g_b
    model.use_b = True
    g_b = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.b.parameters()))
    for g, p in zip(g_b, model.b.parameters()):
        torch.testing.assert_close(p.grad, -0.5 * g, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("cls,kw", METHODS, ids=IDS)
def test_batchnorm_statistics_come_from_the_clean_pass_only(cls, kw):
    model = mlp(seed=3, bn=True)
    reference = mlp(seed=3, bn=True)
    x, y = batch(seed=4)
    opt = cls(model.parameters(), sgd_for_d(model), rho=0.2, model=model, **kw)
    for _ in range(3):
        opt.step(Recorder(model, x, y))
        reference(x)  # lr = 0: the weights stay, so these are the clean-pass statistics
    assert_same_weights(dict(model.named_buffers()), dict(reference.named_buffers()))


@pytest.mark.parametrize("cls,kw", METHODS, ids=IDS)
def test_gradient_accumulation_equals_the_big_batch(cls, kw):
    x, y = batch(seed=5, n=32)
    results = []
    for n_micro in (1, 4):
        model = mlp(seed=6)
        base = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
        opt = cls(model.parameters(), base, rho=0.1, **kw)
        closure = Recorder(model, x, y, micro=n_micro)
        for _ in range(3):
            stats = opt.step(closure)
        results.append((weights(model), stats.loss, getattr(opt, "alpha", None)))
    (w1, l1, a1), (w4, l4, a4) = results
    torch.testing.assert_close(flat(w1), flat(w4), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(l1, l4, rtol=1e-12, atol=0)
    assert a1 == a4


@pytest.mark.parametrize("cls,kw", METHODS, ids=IDS)
def test_state_dict_round_trip_is_bit_exact(cls, kw):
    x, y = batch(seed=7)

    def build():
        model = mlp(seed=8, bn=True)
        base = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05) if cls is gsam.XSAM else \
            torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
        return model, cls(model.parameters(), base, rho=0.1, model=model, **kw)

    model, opt = build()
    for _ in range(6):
        opt.step(Recorder(model, x, y))
    straight = weights(model) + [b.clone() for b in model.buffers()]

    model, opt = build()
    for _ in range(3):
        opt.step(Recorder(model, x, y))
    opt.rho = 0.07  # state, not construction arguments, must win on load
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    model, opt = build()
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["opt"])
    assert opt.rho == 0.07
    opt.rho = 0.1
    if cls is gsam.XSAM:
        assert opt.searches == 2 and opt.steps_taken == 3
    for _ in range(3):
        opt.step(Recorder(model, x, y))
    resumed = weights(model) + [b.clone() for b in model.buffers()]
    assert_same_weights(straight, resumed)
    # the base optimizer's groups are the ones that step (lr schedulers act on either)
    assert opt.param_groups is opt.base_optimizer.param_groups


def test_state_dict_holds_the_base_state_and_alpha_star():
    model = mlp()
    x, y = batch()
    opt = gsam.XSAM(model.parameters(), torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
                    rho=0.1, rho_probe=0.3, search_every=5)
    opt.step(Recorder(model, x, y))
    sd = opt.state_dict()
    assert len(sd["base_optimizer"]["state"]) == len(list(model.parameters()))  # momentum buffers
    assert sd["sharpness"]["alpha"] == opt.alpha and sd["sharpness"]["searches"] == 1
    with pytest.raises(ValueError, match="state_dict"):
        opt.load_state_dict(sd["base_optimizer"])


@pytest.mark.parametrize("cls,kw", METHODS, ids=IDS)
def test_non_finite_loss_skips_the_whole_step(cls, kw):
    model = mlp(seed=9, bn=True)
    x, y = batch(seed=10)
    base = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt = cls(model.parameters(), base, rho=0.1, model=model, **kw)
    opt.step(Recorder(model, x, y))
    before = weights(model) + [b.clone() for b in model.buffers()]
    base_before = {k: v["momentum_buffer"].clone() for k, v in base.state_dict()["state"].items()}
    alpha_before = opt.alpha
    x_bad = x.clone()
    x_bad[0, 0] = float("nan")  # the clean pass already writes NaN into the BN running stats
    stats = opt.step(Recorder(model, x_bad, y))
    assert stats.skipped and opt.steps_skipped == 1 and opt.steps_taken == 1
    assert_same_weights(before, weights(model) + list(model.buffers()))
    for k, v in base.state_dict()["state"].items():
        assert torch.equal(v["momentum_buffer"], base_before[k])
    assert opt.alpha == alpha_before
    assert not opt.step(Recorder(model, x, y)).skipped  # and training goes on


def test_clipping_acts_on_the_final_update_not_on_g():
    x, y = batch(seed=11)
    seen = []
    for clip in (None, 1e-3):
        model = mlp(seed=12)
        w0 = weights(model)
        opt = gsam.GSAM(model.parameters(), torch.optim.SGD(model.parameters(), lr=1.0), rho=0.1, alpha=0.3,
                        max_grad_norm=clip)
        closure = Recorder(model, x, y)
        stats = opt.step(closure)
        seen.append((closure.grad_calls()[1], flat(w0) - flat(weights(model)), stats.update_norm))
    (adv_free, step_free, norm_free), (adv_clip, step_clip, norm_clip) = seen
    assert_same_weights(adv_free, adv_clip)  # the perturbation did not see the clipping
    assert norm_free.item() == pytest.approx(norm_clip.item())
    assert step_clip.norm().item() == pytest.approx(1e-3, rel=1e-5)  # ||d|| clipped to max_grad_norm
    torch.testing.assert_close(step_clip / step_clip.norm(), step_free / step_free.norm(), rtol=1e-9, atol=1e-12)


def test_bf16_autocast_inside_the_closure():
    x, y = batch(seed=13, dtype=torch.float32)
    updates = []
    for dtype in (None, torch.bfloat16):
        model = mlp(seed=14, dtype=torch.float32)
        w0 = flat(weights(model))
        opt = gsam.GSAM(model.parameters(), torch.optim.SGD(model.parameters(), lr=0.1), rho=0.1, alpha=0.4)
        stats = opt.step(Recorder(model, x, y, autocast=dtype))
        assert not stats.skipped and all(p.dtype == torch.float32 for p in model.parameters())
        updates.append(flat(weights(model)) - w0)
    cos = updates[0] @ updates[1] / (updates[0].norm() * updates[1].norm())
    assert cos.item() > 0.99


@pytest.mark.parametrize("overflow_pass", [1, 2], ids=["clean_pass", "perturbed_pass"])
@pytest.mark.parametrize("cls,kw", METHODS, ids=IDS)
def test_fp16_grad_scaler_steps_and_skips_on_overflow(cls, kw, overflow_pass):
    """An fp16 overflow in any pass skips the whole step: weights, BatchNorm statistics and the base optimizer's
    state stay as they were and the scale backs off; the next step goes on. In the clean pass the forward itself
    overflows (inputs beyond fp16's range), so the BatchNorm statistics it updates become non-finite and must be
    restored; in the perturbed pass the loss does (BatchNorm is frozen there)."""
    x, y = batch(seed=15, dtype=torch.float32)
    model = mlp(seed=16, dtype=torch.float32, bn=True)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    base = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt = cls(model.parameters(), base, rho=0.1, model=model, grad_scaler=scaler, **kw)
    overflow_at = [None]
    calls = [0]

    def closure():
        calls[0] += 1
        overflow = calls[0] == overflow_at[0]
        with torch.autocast("cpu", dtype=torch.float16):
            loss = F.cross_entropy(model(x * 1e6 if overflow and overflow_pass == 1 else x), y)
        if overflow and overflow_pass == 2:
            loss = loss * float("inf")
        if torch.is_grad_enabled():
            opt.backward(loss)
        return loss

    w0 = flat(weights(model))
    stats = opt.step(closure)
    assert not stats.skipped and not torch.equal(w0, flat(weights(model)))
    assert stats.grad_norm.item() < 10  # reported in loss units, not scaled by 2^10
    assert scaler.get_scale() == 2.0**10
    before = weights(model) + [b.clone() for b in model.buffers()]
    momentum = [base.state[p]["momentum_buffer"].clone() for p in model.parameters()]
    calls[0] = 0
    overflow_at[0] = overflow_pass
    stats = opt.step(closure)
    assert calls[0] >= 2  # the step went on to its later passes, then dropped the update
    assert stats.skipped and opt.steps_skipped == 1
    assert scaler.get_scale() == 2.0**9  # the scale backed off
    assert_same_weights(before, weights(model) + list(model.buffers()))
    for a, p in zip(momentum, model.parameters()):
        assert torch.equal(a, base.state[p]["momentum_buffer"])
    calls[0] = 0
    overflow_at[0] = None
    stats = opt.step(closure)  # training goes on at the lower scale
    assert not stats.skipped and scaler.get_scale() == 2.0**9
    assert all(torch.isfinite(t).all() for t in weights(model) + list(model.buffers()))


def test_bad_arguments_name_the_argument():
    model = mlp()
    other = mlp(seed=1)
    base = torch.optim.SGD(model.parameters(), lr=0.1)
    cases = [
        (lambda: gsam.SAM(model.parameters(), base, rho=-0.1), "rho"),
        (lambda: gsam.GSAM(model.parameters(), base, rho=0.1, alpha=-0.2), "alpha"),
        (lambda: gsam.XSAM(model.parameters(), base, steps=0), "steps"),
        (lambda: gsam.XSAM(model.parameters(), base, rho_probe=-1.0), "rho_probe"),
        (lambda: gsam.XSAM(model.parameters(), base, search_every=-1), "search_every"),
        (lambda: gsam.XSAM(model.parameters(), base, alpha_grid=[]), "alpha_grid"),
        (lambda: gsam.GSAM(other.parameters(), base), "base_optimizer"),
        (lambda: gsam.GSAM(list(model.parameters())[:2], base), "base_optimizer"),
        (lambda: gsam.GSAM(model.parameters(), "sgd"), "base_optimizer"),
        (lambda: gsam.SAM(model.parameters(), base, max_grad_norm=-1.0), "max_grad_norm"),
    ]
    for build, name in cases:
        with pytest.raises(ValueError, match=name):
            build()
    opt = gsam.GSAM(model.parameters(), base)
    for attr in ("rho", "alpha"):
        with pytest.raises(ValueError, match=attr):
            setattr(opt, attr, -1.0)
    opt.rho, opt.alpha = 0.03, 1.5  # settable between steps
    assert (opt.rho, opt.alpha) == (0.03, 1.5)
    with pytest.raises(ValueError, match="closure"):
        opt.step(None)


def test_lr_scheduler_on_the_wrapper_drives_the_base_optimizer():
    model = mlp()
    x, y = batch()
    base = torch.optim.SGD(model.parameters(), lr=1.0)
    opt = gsam.SAM(model.parameters(), base, rho=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 ** step)
    opt.step(Recorder(model, x, y))
    sched.step()
    assert base.param_groups[0]["lr"] == 0.5
