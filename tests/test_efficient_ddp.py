"""The efficient variants (every-k, LookSAM, LookGSAM, MESA) under data parallelism: tests/ddp_worker.py under real
torchrun (2 gloo processes, half the batch each, the ``ddp_ranks`` fixture) against one process on the whole batch.

Every variant runs k = 2 over 3 steps (support.ddp_cases.EFFICIENT_SCENARIOS): a full step, a one-pass step that
reuses, and the next cycle's full step."""
import pytest
import torch
import torch.nn.functional as F

import gsam
from gsam.run.engine import make_closures
from support.ddp_cases import EFFICIENT_RHO, EFFICIENT_SCENARIOS, GROUPS, STEPS, efficient_optimizer
from support.nets import batch, flat, looksam_g_v, mlp, reference_gsam, weights

pytestmark = pytest.mark.slow  # the fixture starts torchrun
NAMES = list(EFFICIENT_SCENARIOS)
# float64 on both sides; what differs is the order of the sums (one process adds 4 groups' d, or 32 images' losses,
# in one order; two ranks add 2 and 2, or 16 and 16, then all-reduce), about 1e-16 relative per rounding. Measured
# over the 3 steps: at most 6e-14 relative on a weight (LookSAM's rescaling amplifies most), so 1e-12 leaves a
# margin of ~16x and is far below a real difference (per-rank g_v moved the weights by 2.8e-3)
RTOL, ATOL = 1e-12, 1e-14


def leaves(obj, path=""):
    """(path, value) of every non-container in nested dicts, lists and tuples (a state_dict)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from leaves(v, f"{path}/{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from leaves(v, f"{path}/{i}")
    else:
        yield path, obj


def assert_same_state(a: dict, b: dict, exact: bool) -> None:
    """Two optimizer state_dicts: the same keys, numbers equal, tensors equal (``exact``) or within RTOL/ATOL."""
    a, b = list(leaves(a)), list(leaves(b))
    assert [p for p, _ in a] == [p for p, _ in b]
    for (path, x), (_, y) in zip(a, b):
        if isinstance(x, torch.Tensor) and not exact:
            torch.testing.assert_close(x, y, rtol=RTOL, atol=ATOL, msg=path)
        elif isinstance(x, torch.Tensor):
            assert torch.equal(x, y), path
        else:
            assert x == y, path


def one_process(name: str):
    """The scenario on one process: the whole batch, in the 2 * GROUPS groups the two ranks hold between them."""
    x, y = batch(seed=1, n=32)
    net = mlp(seed=0, bn=EFFICIENT_SCENARIOS[name][2])
    opt = efficient_optimizer(name, net)
    closures = make_closures(net, opt, F.cross_entropy, x, y, 2 * GROUPS, 1, None)
    for _ in range(STEPS):
        opt.step(closures if len(closures) > 1 else closures[0])
    return net, opt


@pytest.mark.parametrize("name", NAMES)
def test_two_processes_of_half_the_batch_equal_one_process_on_all_of_it(ddp_ranks, name):
    """Weights, the optimizer's whole state (momentum, g_v and its norm, MESA's average, the step counters) and,
    with BatchNorm, rank 0's running statistics (its group 0 is the single process's group 0)."""
    net, opt = one_process(name)
    got = ddp_ranks[0][name]
    for a, b in zip(weights(net) + list(net.buffers()), got["weights"] + got["buffers"]):
        torch.testing.assert_close(a, b, rtol=RTOL, atol=ATOL)
    assert_same_state(opt.state_dict(), got["state"], exact=False)
    assert got["state"]["sharpness"]["steps_taken"] == STEPS


@pytest.mark.parametrize("name", NAMES)
def test_both_ranks_end_with_the_same_weights_and_optimizer_state(ddp_ranks, name):
    """Bit for bit: the reuse buffer, MESA's average and the counters included (a checkpoint keeps rank 0's; a
    resumed rank 1 must be where it was)."""
    r0, r1 = ddp_ranks[0][name], ddp_ranks[1][name]
    for a, b in zip(r0["weights"], r1["weights"]):
        assert torch.equal(a, b)
    assert_same_state(r0["state"], r1["state"], exact=True)


@pytest.mark.parametrize("name", NAMES)
def test_one_all_reduce_per_step_the_one_pass_steps_and_the_average_included(ddp_ranks, name):
    """Per-worker perturbation: no pass synchronises; the optimizer all-reduces d once per step, in one bucket.
    LookSAM's refresh sends g_v in that same all-reduce (twice the volume on one step in k). MESA is vanilla's step:
    DDP's one bucket, overlapped with the backward, and nothing else (its average follows weights that are already
    the same on every rank)."""
    cls, kw, bn = EFFICIENT_SCENARIOS[name]
    numel = sum(p.numel() for p in mlp(bn=bn).parameters())
    for rank in ddp_ranks:
        for t, (step, gap) in enumerate(zip(rank[name]["counts"], rank[name]["gaps"])):
            assert step["broadcasts"] == 0
            if cls is gsam.MESA:
                assert step["ddp_buckets"] == 1 and step["all_reduce_calls"] == 0
                continue
            full = t % kw["k"] == 0
            assert bool(torch.isnan(gap)) != full  # the one-pass step measures no h: the cycle was crossed
            assert step["ddp_buckets"] == 0 and step["all_reduce_calls"] == 1
            refresh = cls is gsam.LookSAM and full
            assert step["all_reduce_numel"] == (2 if refresh else 1) * numel


@pytest.mark.parametrize("name", ["looksam", "lookgsam"])
def test_looksam_g_v_is_the_mean_over_the_groups_of_both_ranks(ddp_ranks, name):
    """The last step's refresh written out from Algorithm 1 in float64, at the weights the ranks held before it:
    g_v = mean over the global batch's 2 * GROUPS groups of g_s - (<g, g_s>/||g||^2) g (LookGSAM: GSAM's d in place
    of g_s), on both ranks; not each rank's mean over its own groups."""
    _, kw, _ = EFFICIENT_SCENARIOS[name]
    assert (STEPS - 1) % kw["k"] == 0  # the last step refreshes
    model = mlp(seed=0, bn=True)
    with torch.no_grad():
        for p, w in zip(model.parameters(), ddp_ranks[0][name]["trajectory"][-1]):
            p.copy_(w)
    x, y = batch(seed=1, n=32)
    groups = zip(x.chunk(2 * GROUPS), y.chunk(2 * GROUPS))
    refs = [reference_gsam(model, xg, yg, EFFICIENT_RHO, alpha=kw.get("gsam_alpha", 0.0)) for xg, yg in groups]
    g_v = torch.stack([looksam_g_v(d, g) for _, d, g, _ in refs]).mean(0)
    for rank in ddp_ranks:
        state = rank[name]["state"]["sharpness"]
        torch.testing.assert_close(flat(state["g_v"]), g_v, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(state["g_v_norm"], g_v.norm(), rtol=1e-12, atol=0)
