"""The efficient variants (every-k, LookSAM, LookGSAM, MESA) against their update rules written out in float64, k = 1
against the full methods bit for bit, the reuse buffer through the optimizer's state and through the trainer."""
import io

import pytest
import torch

import gsam
from gsam.config.checks import ConfigError, check
from gsam.optim.factory import build_optimizer
from support.cli import train_losses
from support.ddp_cases import EFFICIENT_RHO, EFFICIENT_SCENARIOS
from support.nets import (Recorder, assert_same_weights, batch, flat, grad_at, looksam_g_v, mlp, reference_gsam,
                          sgd_for_d, weights)

RHO, ALPHA, GSAM_ALPHA = 0.05, 0.7, 0.4


def _d(model) -> torch.Tensor:
    return flat([p.grad for p in model.parameters()])


@pytest.mark.parametrize("k", [1, 3])
def test_every_k_is_sam_on_one_step_in_k_and_plain_descent_between(k):
    model = mlp(seed=3)
    opt = gsam.EveryK(model.parameters(), sgd_for_d(model), rho=RHO, k=k)
    for t in range(2 * k + 1):
        x, y = batch(seed=10 + t)
        closure = Recorder(model, x, y)
        stats = opt.step(closure)
        if t % k == 0:
            _, d_ref, _, _ = reference_gsam(model, x, y, RHO, alpha=0.0)  # d = g_p
            assert len(closure.calls) == 2 and torch.isfinite(stats.surrogate_gap)
        else:
            d_ref = flat(grad_at(model, x, y, weights(model)))
            assert len(closure.calls) == 1 and torch.isnan(stats.surrogate_gap) and torch.isnan(stats.sharpness)
        torch.testing.assert_close(_d(model), d_ref, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("gsam_alpha", [0.0, GSAM_ALPHA], ids=["looksam", "lookgsam"])
def test_looksam_refreshes_g_v_every_k_steps_and_reuses_it_between(gsam_alpha):
    model, k = mlp(seed=4), 3
    opt = gsam.LookSAM(model.parameters(), sgd_for_d(model), rho=RHO, k=k, alpha=ALPHA, gsam_alpha=gsam_alpha)
    g_v = None
    for t in range(2 * k):
        x, y = batch(seed=20 + t)  # a new batch every step: the reuse must take g from its own step
        closure = Recorder(model, x, y)
        opt.step(closure)
        if t % k == 0:
            _, d_ref, g, _ = reference_gsam(model, x, y, RHO, alpha=gsam_alpha)  # alpha 0: d = g_s
            g_v = looksam_g_v(d_ref, g)
            assert len(closure.calls) == 2
        else:
            g = flat(grad_at(model, x, y, weights(model)))
            d_ref = g + ALPHA * g.norm() / g_v.norm() * g_v
            assert len(closure.calls) == 1
        torch.testing.assert_close(_d(model), d_ref, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(flat([opt._gv[p] for p in model.parameters()]), g_v, rtol=1e-12, atol=1e-15)


def test_looksam_with_groups_stores_the_mean_g_v_and_rescales_it_to_the_mean_gradient():
    model = mlp(seed=5)
    opt = gsam.LookSAM(model.parameters(), sgd_for_d(model), rho=RHO, k=2, alpha=ALPHA)
    x, y = batch(seed=30, n=32)
    halves = list(zip(x.split(16), y.split(16)))
    opt.step([Recorder(model, xg, yg) for xg, yg in halves])
    per_group = [reference_gsam(model, xg, yg, RHO, alpha=0.0) for xg, yg in halves]
    g_v = torch.stack([looksam_g_v(d, g) for _, d, g, _ in per_group]).mean(0)
    torch.testing.assert_close(_d(model), torch.stack([d for _, d, _, _ in per_group]).mean(0), rtol=1e-12, atol=1e-15)
    x, y = batch(seed=31, n=32)
    halves = list(zip(x.split(16), y.split(16)))
    opt.step([Recorder(model, xg, yg) for xg, yg in halves])
    gs = [flat(grad_at(model, xg, yg, weights(model))) for xg, yg in halves]
    g = torch.stack(gs).mean(0)  # the step's mean gradient (tests/test_looksam_groups.py: why not each group's)
    d_ref = g + ALPHA * g.norm() / g_v.norm() * g_v
    torch.testing.assert_close(_d(model), d_ref, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("full, variant", [
    ((gsam.SAM, {}), (gsam.EveryK, {"k": 1})),
    ((gsam.SAM, {"adaptive": True}), (gsam.EveryK, {"k": 1, "adaptive": True})),
    ((gsam.SAM, {}), (gsam.LookSAM, {"k": 1, "alpha": ALPHA})),
    ((gsam.GSAM, {"alpha": GSAM_ALPHA}), (gsam.LookSAM, {"k": 1, "alpha": ALPHA, "gsam_alpha": GSAM_ALPHA})),
], ids=["every_k", "every_k-asam", "looksam", "lookgsam"])
def test_k1_is_the_full_method_bit_for_bit(full, variant):
    """Weights, BatchNorm buffers and momentum, 4 steps of 2 perturbation groups each."""
    x, y = batch(seed=40, n=32)
    runs = []
    for cls, kw in (full, variant):
        model = mlp(bn=True)
        base = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
        opt = cls(model.parameters(), base, rho=RHO, model=model, **kw)
        for _ in range(4):
            opt.step([Recorder(model, xg, yg) for xg, yg in zip(x.split(16), y.split(16))])
        runs.append(weights(model) + [b.clone() for b in model.buffers()]
                    + [base.state[p]["momentum_buffer"] for p in model.parameters()])
    assert_same_weights(*runs)


def _looksam(model):
    base = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return gsam.LookSAM(model.parameters(), base, rho=RHO, k=3, alpha=ALPHA, model=model)


def _mesa(model):
    base = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    return gsam.MESA(model.parameters(), base, model=model, lam=0.8, tau=5.0, decay=0.5)


def _steps(opt, model, batches):
    from gsam.run.engine import make_closures

    for x, y in batches:  # the trainer's closures (MESA's term enters there)
        opt.step(make_closures(model, opt, torch.nn.functional.cross_entropy, x, y, 1, 1, None))


@pytest.mark.parametrize("build", [_looksam, _mesa], ids=["looksam", "mesa"])
def test_state_dict_mid_cycle_resumes_bit_for_bit(build):
    """Saved after step 4 of 7 (LookSAM k = 3: the g_v stored at step 3 is needed by steps 4 and 5; MESA: its
    average), through torch.save/torch.load(weights_only=True) as the checkpoint is."""
    batches = [batch(seed=50 + t) for t in range(7)]
    straight = mlp(bn=True)
    _steps(build(straight), straight, batches)
    first = mlp(bn=True)
    opt = build(first)
    _steps(opt, first, batches[:4])
    buf = io.BytesIO()
    torch.save({"model": first.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    resumed = mlp(seed=9, bn=True)
    resumed.load_state_dict(saved["model"])
    opt = build(resumed)
    opt.load_state_dict(saved["opt"])
    _steps(opt, resumed, batches[4:])
    assert_same_weights(weights(straight) + list(straight.buffers()), weights(resumed) + list(resumed.buffers()))


def test_a_non_finite_refresh_is_skipped_and_the_next_step_refreshes():
    model = mlp(seed=6)
    opt = gsam.LookSAM(model.parameters(), torch.optim.SGD(model.parameters(), lr=0.1), rho=RHO, k=3, alpha=ALPHA)
    x, y = batch(seed=60)
    opt.step(Recorder(model, x, y))  # refresh at step 0
    before = weights(model)
    poisoned = Recorder(model, x, y, loss_fn=lambda out, t: torch.nn.functional.cross_entropy(out, t) * float("nan"))
    for _ in range(2):  # steps 1 and 2 reuse (NaN g): skipped
        assert opt.step(poisoned).skipped
    stats = opt.step(poisoned)  # step 3 refreshes, NaN too: skipped, g_v unusable
    assert stats.skipped and opt._gv_norm is None
    assert_same_weights(before, weights(model))
    closure = Recorder(model, x, y)
    assert not opt.step(closure).skipped
    assert len(closure.calls) == 2  # step 4 is not due (4 % 3 != 0) but has no g_v: it refreshes


@pytest.mark.parametrize("name, keys, bad", [
    ("every_k", {"k": 10}, "sam.k=0"), ("looksam", {"k": 5, "alpha": 0.1}, "sam.k=0"),
    ("lookgsam", {"k": 5, "alpha": 0.1, "gsam_alpha": 0.01}, "sam.k=0"),
    ("mesa", {"lam": 0.8, "tau": 5.0, "decay": 0.9998, "start_step": 0}, "sam.start_step=-1")])
def test_shipped_configs_compose_and_build(compose, name, keys, bad):
    cfg = compose(f"sam={name}")
    check(cfg)
    opt = build_optimizer(mlp(), cfg.optimizer, cfg.sam)
    for key, value in keys.items():
        assert getattr(opt, key) == value
    with pytest.raises(ConfigError, match=rf"^{bad.replace('.', '[.]')}: expected an integer >= "):
        check(compose(f"sam={name}", bad))


@pytest.mark.slow
def test_looksam_through_the_trainer_resumes_mid_cycle_bit_for_bit(tmp_path, demo_root, demo_config):
    """Stopped after step 4 of 10 (k = 3: mid-cycle), rerun to the end: every step's loss and the final weights
    are those of the run that never stopped."""
    from gsam.state.checkpoint import load
    from gsam.run.experiment import run

    common = ["sam=looksam", "sam.k=3", "model=demo_mixer", "schedule.epochs=2", "data.batch_size=256",
              "train.log_every=1"]
    run(demo_config(tmp_path / "straight", demo_root, *common))
    run(demo_config(tmp_path / "stopped", demo_root, *common, "train.max_steps=4"))
    assert load(tmp_path / "stopped" / "checkpoints" / "last.pt")["loop"]["step"] == 4
    run(demo_config(tmp_path / "stopped", demo_root, *common, "train.resume=allow_changes"))
    assert train_losses(tmp_path / "straight") == train_losses(tmp_path / "stopped")
    a, b = (load(tmp_path / out / "checkpoints" / "last.pt") for out in ("straight", "stopped"))
    assert_same_weights(a["model"], b["model"])


def _mesa_reference(model, teacher, x, y, lam, tau):
    """grad of CE + lam tau^2 mean KL(softmax(z_teacher/tau) || softmax(z/tau)) by autograd (SAF's MESA loss)."""
    w = [p.detach().clone().requires_grad_(True) for p in model.parameters()]
    names = [n for n, _ in model.named_parameters()]
    z = torch.func.functional_call(model, dict(zip(names, w)), (x,))
    p_t = torch.softmax(teacher(x) / tau, -1)
    kl = (p_t * (p_t.log() - torch.log_softmax(z / tau, -1))).sum(-1).mean()
    loss = torch.nn.functional.cross_entropy(z, y) + lam * tau**2 * kl
    return flat(torch.autograd.grad(loss, w))


def test_mesa_descends_on_ce_plus_the_kl_to_its_average_and_updates_the_average():
    from gsam.run.engine import make_closures

    model, teacher = mlp(seed=7), mlp(seed=8)  # the average set to other weights, so the KL term is not zero
    opt = gsam.MESA(model.parameters(), sgd_for_d(model), model=model, lam=0.8, tau=5.0, decay=0.9)
    opt._ema.update({k: v.clone() for k, v in teacher.state_dict().items()})
    x, y = batch(seed=70)
    d_ref = _mesa_reference(model, teacher, x, y, 0.8, 5.0)
    for accum in (1, 2):  # the trainer's closures: micro-batches accumulate the same gradient
        opt._ema.update({k: v.clone() for k, v in teacher.state_dict().items()})
        opt.step(make_closures(model, opt, torch.nn.functional.cross_entropy, x, y, 2, accum, None))
        torch.testing.assert_close(_d(model), d_ref, rtol=1e-12, atol=1e-15)
        for (k, e), t, w in zip(opt._ema.items(), teacher.state_dict().values(), model.state_dict().values()):
            torch.testing.assert_close(e, 0.9 * t + 0.1 * w, rtol=1e-14, atol=1e-15)


def test_mesa_before_its_start_step_is_vanilla_bit_for_bit():
    from gsam.run.engine import make_closures

    runs = []
    for cls, kw in ((gsam.Vanilla, {}), (gsam.MESA, {"lam": 0.8, "start_step": 3})):
        model = mlp(bn=True)
        base = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        opt = cls(model.parameters(), base, model=model, **kw)
        for t in range(3):
            x, y = batch(seed=80 + t)
            opt.step(make_closures(model, opt, torch.nn.functional.cross_entropy, x, y, 1, 1, None))
        runs.append(weights(model) + [b.clone() for b in model.buffers()])
    assert_same_weights(*runs)


@pytest.mark.parametrize("name", list(EFFICIENT_SCENARIOS))
def test_bf16_autocast_accumulation_and_clipping_over_a_cycle(name):
    """The trainer's closures, 2 perturbation groups, k = 2 over 3 steps (full, one-pass, full). In float32, 2
    micro-batches per group take the steps of 1; under bf16 autocast every step is taken and close to float32's
    but not equal to it (autocast ran); ||d|| is clipped to max_grad_norm on every step, one-pass steps included."""
    from gsam.run.engine import make_closures

    cls, kw, _ = EFFICIENT_SCENARIOS[name]
    lr, clip = 0.1, 0.05
    runs = {}
    for amp, accum in ((None, 1), (None, 2), (torch.bfloat16, 2)):
        model = mlp(seed=0, dtype=torch.float32)
        opt = cls(model.parameters(), torch.optim.SGD(model.parameters(), lr=lr), rho=EFFICIENT_RHO, model=model,
                  max_grad_norm=clip, **kw)
        steps = []
        for t in range(3):
            x, y = batch(seed=90 + t, dtype=torch.float32)
            before = flat(weights(model)).double()
            stats = opt.step(make_closures(model, opt, torch.nn.functional.cross_entropy, x, y, 2, accum, amp))
            assert not stats.skipped and stats.update_norm.item() > clip  # finite, and the clipping acted
            steps.append(flat(weights(model)).double() - before)
            assert steps[-1].norm().item() == pytest.approx(lr * clip, rel=1e-3)
        runs[amp, accum] = steps
    for fp32, micro, bf16 in zip(runs[None, 1], runs[None, 2], runs[torch.bfloat16, 2]):
        torch.testing.assert_close(micro, fp32, rtol=1e-4, atol=1e-7)
        assert (bf16 @ fp32 / (bf16.norm() * fp32.norm())).item() > 0.99 and not torch.equal(bf16, fp32)
