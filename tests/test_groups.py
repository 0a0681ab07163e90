"""Perturbation groups (m-sharpness): step([closure_1, ..., closure_G]) against G independent
single-group steps, in float64 with BatchNorm; XSAM's search on one group; the trainer's sam.m."""
import copy

import pytest
import torch
import torch.nn.functional as F

import gsam
from gsam.config.checks import ConfigError, batch_plan, check
from gsam.run.engine import make_closures
from gsam.optim.xsam import DEFAULT_ALPHA_GRID
from support import load_script
from support.nets import (IDS, METHODS, Recorder, TwoBranches, assert_same_weights, batch, flat, loss_at, mlp,
                          sgd_for_d, weights)
G, M = 4, 8  # 4 groups of 8 images: the batch of 32
STEPS = 3


def sgd(model):
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)


def state(model) -> list[torch.Tensor]:
    return weights(model) + [b.clone() for b in model.buffers()]


@pytest.mark.parametrize("cls,kw", METHODS, ids=IDS)
def test_one_group_is_the_single_closure_step_bit_for_bit(cls, kw):
    x, y = batch(seed=1, n=32)
    runs = []
    for as_list in (False, True):
        model = mlp(seed=0, bn=True)
        opt = cls(model.parameters(), sgd(model), rho=0.1, model=model, max_grad_norm=0.5, **kw)
        stats = [opt.step([Recorder(model, x, y)] if as_list else Recorder(model, x, y)).as_dict()
                 for _ in range(STEPS)]
        runs.append((state(model), stats))
    (s0, st0), (s1, st1) = runs
    assert_same_weights(s0, s1)
    assert st0 == st1


def reference_step(model, cls, kw, chunks, search: bool, alpha: float):
    """G independent single-group steps on copies of ``model`` (lr 0, so p.grad is d_g); returns the
    d_g, group 0's model (its BN statistics) and the stats. XSAM: group 0 searches when asked, and
    every group uses the alpha* of group 0."""
    ds, locals_, stats = [], [], []
    for i, (xg, yg) in enumerate(chunks):
        local = copy.deepcopy(model)
        kw_i = {**kw, "search_every": 0, "alpha": alpha} if cls is gsam.XSAM else kw
        opt = cls(local.parameters(), sgd_for_d(local), rho=0.1, model=local, **kw_i)
        if cls is gsam.XSAM:
            opt.search_next = search and i == 0
        stats.append(opt.step(Recorder(local, xg, yg)))
        alpha = getattr(opt, "alpha", 0.0)
        ds.append([p.grad.clone() for p in local.parameters()])
        locals_.append(local)
    return ds, locals_[0], stats, alpha


@pytest.mark.parametrize("cls,kw", METHODS, ids=IDS)
def test_groups_are_the_mean_of_independent_single_group_updates(cls, kw):
    x, y = batch(seed=1, n=G * M)
    chunks = list(zip(x.chunk(G), y.chunk(G)))
    model, ref = mlp(seed=0, bn=True), mlp(seed=0, bn=True)
    opt = cls(model.parameters(), sgd(model), rho=0.1, model=model, **kw)
    ref_base, alpha = sgd(ref), kw.get("alpha", 1.0)
    for step in range(STEPS):
        searched = cls is gsam.XSAM and step % kw["search_every"] == 0
        ds, first, ref_stats, alpha = reference_step(ref, cls, kw, chunks, searched, alpha)
        for p, *d in zip(ref.parameters(), *ds):
            p.grad = sum(d) / G
        ref_base.step()
        for b, b0 in zip(ref.buffers(), first.buffers()):  # running statistics: group 0's clean pass
            b.copy_(b0)
        stats = opt.step([Recorder(model, xg, yg) for xg, yg in chunks])
        assert stats.searched == searched and stats.alpha == ref_stats[0].alpha
        for key in ("loss", "perturbed_loss", "grad_norm", "perturbed_grad_norm", "cos"):
            mean = torch.stack([getattr(s, key) for s in ref_stats]).mean()
            torch.testing.assert_close(getattr(stats, key), mean, rtol=1e-12, atol=1e-15)
        for a, b in zip(state(model), state(ref)):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_batchnorm_statistics_come_from_group_0s_clean_pass_only():
    model, reference = mlp(seed=3, bn=True), mlp(seed=3, bn=True)
    x, y = batch(seed=4, n=G * M)
    opt = gsam.GSAM(model.parameters(), sgd_for_d(model), rho=0.2, alpha=0.3, model=model)
    opt.step([Recorder(model, xg, yg) for xg, yg in zip(x.chunk(G), y.chunk(G))])
    reference(x[:M])  # one train-mode forward of group 0 at w (lr 0 keeps w)
    assert_same_weights(dict(model.named_buffers()), dict(reference.named_buffers()))
    everyone = mlp(seed=3, bn=True)
    everyone(x)  # the statistics of the whole batch differ: the test can tell
    assert not torch.equal(everyone.state_dict()["1.running_mean"], model.state_dict()["1.running_mean"])


def test_a_parameter_one_group_does_not_reach_adds_zero():
    """d = (1/G) sum_g d_g with d_g = 0 where group g has no gradient."""
    x, y = batch(n=16)
    model = TwoBranches()
    uses_b = []

    def closure_for(xg, yg, use_b):
        return Recorder(model, xg, yg, before=lambda: (setattr(model, "use_b", use_b), uses_b.append(use_b)))

    opt = gsam.SAM(model.parameters(), sgd_for_d(model), rho=0.1)
    opt.step([closure_for(x[:8], y[:8], True), closure_for(x[8:], y[8:], False)])
    d_b = [p.grad.clone() for p in model.b.parameters()]
    model.use_b = True
    alone = copy.deepcopy(model)
    gsam.SAM(alone.parameters(), sgd_for_d(alone), rho=0.1).step(Recorder(alone, x[:8], y[:8]))
    for d, p in zip(d_b, alone.b.parameters()):
        torch.testing.assert_close(d, p.grad / 2, rtol=1e-13, atol=1e-16)
    assert uses_b == [True, True, False, False]


def test_xsam_searches_on_one_group_for_21_forward_passes_of_m_images():
    x, y = batch(seed=5, n=G * M)
    model = mlp(seed=4, bn=True)
    k = 2
    opt = gsam.XSAM(model.parameters(), sgd_for_d(model), rho=0.2, rho_probe=0.5, steps=k, search_every=1,
                    model=model)
    closures = [Recorder(model, xg, yg) for xg, yg in zip(x.chunk(G), y.chunk(G))]
    stats = opt.step(closures)
    assert stats.searched and opt.searches == 1
    probes = [len(c.probe_calls()) for c in closures]
    assert probes == [len(DEFAULT_ALPHA_GRID), 0, 0, 0] == [21, 0, 0, 0]
    assert [len(c.grad_calls()) for c in closures] == [k + 1] * G  # every group ascends on its own
    # the search's cost in forward passes: 21 of m images (not 21 of the whole batch)
    assert sum(n * c.x.shape[0] for n, c in zip(probes, closures)) == 21 * M
    # alpha* is the argmax of group 0's own probe losses (first maximiser)
    losses = [loss_at(model, closures[0].x, closures[0].y, w).item() for w in closures[0].probe_calls()]
    torch.testing.assert_close(opt.last_probe_losses.double(), torch.tensor(losses, dtype=torch.float64),
                               rtol=1e-6, atol=0)
    assert opt.alpha == DEFAULT_ALPHA_GRID[max(range(21), key=lambda i: (losses[i], -i))]


def test_xsam_schedule_counts_skipped_steps_and_search_next_overrides_it():
    """search_every counts calls of step (the loop's steps), skipped ones included: the search falls on the same
    steps whether or not one was skipped."""
    x, y = batch(seed=6, n=16)
    bad = torch.full_like(x, float("nan"))
    model = mlp(seed=5)
    opt = gsam.XSAM(model.parameters(), torch.optim.SGD(model.parameters(), lr=0.05), rho=0.05, rho_probe=0.1,
                    search_every=2)
    searched = [opt.step(Recorder(model, bad if i == 1 else x, y)).searched for i in range(5)]
    assert searched == [True, False, True, False, True] and opt.steps_skipped == 1
    opt.search_next = True
    assert opt.step(Recorder(model, x, y)).searched and opt.search_next is None  # step 5: forced, then reset
    opt.search_next = False
    assert not opt.step(Recorder(model, x, y)).searched  # step 6 would search: suppressed


@pytest.mark.parametrize("accum", [1, 2])
def test_engine_builds_one_closure_per_group_with_micro_batches(accum):
    """make_closures: G closures of m images; micro-batches within a group give the group's step."""
    x, y = batch(seed=7, n=G * M)
    model, ref = mlp(seed=8, bn=False), mlp(seed=8, bn=False)
    opt = gsam.GSAM(model.parameters(), sgd(model), rho=0.1, alpha=0.4)
    closures = make_closures(model, opt, F.cross_entropy, x, y, G, accum, None)
    assert len(closures) == G
    opt.step(closures)
    gsam.GSAM(ref.parameters(), sgd(ref), rho=0.1, alpha=0.4).step(
        [Recorder(ref, xg, yg) for xg, yg in zip(x.chunk(G), y.chunk(G))])
    torch.testing.assert_close(flat(weights(model)), flat(weights(ref)), rtol=1e-12, atol=1e-14)
    vanilla = gsam.Vanilla(model.parameters(), sgd(model))
    assert len(make_closures(model, vanilla, F.cross_entropy, x, y, G, accum, None)) == 1  # nothing to perturb


def test_batch_plan_groups():
    plan = batch_plan(4096, 8, 256, m=64)  # 8 GPUs: 512 per process, 8 groups of 64 in one forward each
    assert (plan.per_rank, plan.groups, plan.m, plan.accum, plan.micro) == (512, 8, 64, 1, 64)
    plan = batch_plan(4096, 1, 256, m=1024)  # m larger than a device batch: 4 micro-batches per group
    assert (plan.groups, plan.accum, plan.micro) == (4, 4, 256)
    assert batch_plan(4096, 64, 256, m=64).groups == 1  # 64 processes: one group each, as one group per TPU device
    assert batch_plan(4096, 8, 256) == batch_plan(4096, 8, 256, m=512)  # null = the whole per-process batch


@pytest.mark.parametrize("args,key", [((128, 1, None, 48), "sam.m"), ((4096, 8, 256, 1024), "sam.m"),
                                      ((4096, 8, 48, 64), "data.max_device_batch")])
def test_batch_plan_errors_are_one_line_naming_the_key(args, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as err:
        batch_plan(*args[:3], m=args[3])
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("m", [0, -64, 1.5, "64", True])
def test_check_rejects_a_bad_m(m):
    cfg = {"sam": {"name": "sam", "rho_max": 0.05, "rho_min": 0.05, "m": m},
           "optimizer": {"name": "sgd", "lr": 0.1, "lr_min": 0.0, "weight_decay": 0.0},
           "schedule": {"epochs": 1, "warmup_steps": 0, "decay": "linear"}, "model": {"loss": "softmax"}}
    with pytest.raises(ConfigError, match=r"^sam\.m=") as err:
        check(cfg)
    assert "\n" not in str(err.value)
    check({**cfg, "sam": {**cfg["sam"], "m": 64}})  # a good m passes


@pytest.mark.parametrize("cls,kw", METHODS, ids=IDS)
def test_groups_cost_at_most_one_parameter_sized_buffer_more(cls, kw):
    """Peak memory of a step (the profiler's allocation events), groups against one group, with a
    closure whose forward and backward allocate nothing but the gradients: the running sum of d."""
    bench_optim = load_script("bench/bench_optim")
    cheap_closure, peak_bytes = bench_optim.cheap_closure, bench_optim.peak_bytes

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.Linear(512, 512))
    cheap = cheap_closure(list(model.parameters()))
    opt = cls(model.parameters(), torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9), rho=0.05,
              **{k: v for k, v in kw.items() if k != "search_every"})
    opt.step([cheap] * G)  # allocates the persistent buffers and the momentum
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    extra = (peak_bytes(opt, [cheap] * G, torch.device("cpu")) - peak_bytes(opt, cheap, torch.device("cpu"))) / size
    assert 0.99 < extra < 1.01


def test_the_analysis_task_trains_with_groups(tmp_path):
    """TrainSpec.m: one group of the whole batch is the run without groups, bit for bit; groups change
    the run; an m that does not divide the batch is an error."""
    from gsam.studies.demo_task import DemoData, TrainSpec, demo_mlp, train_demo

    gen = torch.Generator().manual_seed(9)
    x, y = torch.randn(64, 256, generator=gen), torch.randint(0, 10, (64,), generator=gen)  # demo_mlp's shapes
    data = DemoData(x, y, x, y)
    runs = {}
    for m in (None, 32, 8):
        model = demo_mlp(seed=0)
        train_demo(model, data, TrainSpec(method={"name": "gsam", "rho_max": 0.1, "alpha": 0.3}, epochs=2,
                                          batch_size=32, m=m))
        runs[m] = flat(weights(model))
    assert torch.equal(runs[None], runs[32]) and not torch.equal(runs[None], runs[8])
    with pytest.raises(ValueError, match="m=12"):
        train_demo(demo_mlp(seed=0), data, TrainSpec(method={"name": "sam", "rho_max": 0.1}, batch_size=32, m=12))
