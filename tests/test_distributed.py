"""Data parallel with real torchrun (2 processes, gloo, CPU): per-worker and synchronised perturbation."""
import copy

import pytest
import torch
import torch.nn.functional as F

import gsam
from gsam.run.engine import head_closure
from support.ddp_cases import (COMM_BUCKET_NUMELS, COMM_SHAPES, GROUP_SCENARIOS, GROUPS, SCENARIOS, SEARCH_SCENARIO,
                               SEARCH_IMAGES, STEPS, comm_inputs, search_plan)
from support.nets import Recorder, assert_same_weights, batch, mlp, sgd_for_d

# every test here reads the session's 2-process torchrun (conftest ddp_ranks: 8-19 s of start-ups), so the whole
# module is in the slow tier; the fast tier exercises the same code on one process (test_optim_*, test_groups)
pytestmark = pytest.mark.slow

@pytest.fixture
def ranks(ddp_ranks):
    """What each of the two ranks of tests/ddp_worker.py saved."""
    return ddp_ranks


def test_bucketed_all_reduce_averages_every_bucket_with_two_in_flight(ranks):
    """docs/optimizers.md: d is averaged by a bucketed all-reduce, two buckets in flight. Four buckets here
    (two dtypes, 64-byte buckets): one all-reduce per bucket, the second issued before the first is waited
    for and never a third, and every tensor, in every bucket, is the exact mean of the two ranks' tensors."""
    mean = [(a + b) / 2 for a, b in zip(comm_inputs(0), comm_inputs(1))]
    for rank in ranks:
        comm = rank["comm"]
        assert comm["numels"] == COMM_BUCKET_NUMELS
        assert comm["max_in_flight"] == 2 and comm["in_flight"] == 0  # all waited for before returning
        assert [(t.dtype, tuple(t.shape)) for t in comm["tensors"]] == COMM_SHAPES
        assert_same_weights(comm["tensors"], mean)
    assert not all(torch.equal(a, b) for a, b in zip(comm_inputs(0), comm_inputs(1)))  # there was something to average


def n_params():
    return sum(p.numel() for p in mlp().parameters())


@pytest.mark.parametrize("name", list(SCENARIOS) + list(GROUP_SCENARIOS))
def test_ranks_stay_identical(ranks, name):
    r0, r1 = ranks[0][name], ranks[1][name]
    assert_same_weights(r0["weights"], r1["weights"])
    assert r0["alphas"] == r1["alphas"]  # XSAM: the same alpha* on every rank


def test_per_worker_gsam_is_the_average_of_local_updates(ranks):
    x, y = batch(seed=1, n=32)
    shards = list(zip(x.chunk(2), y.chunk(2)))
    model = mlp(seed=0)
    base = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    for _ in range(STEPS):
        ds = []
        for xs, ys in shards:
            local = copy.deepcopy(model)
            gsam.GSAM(local.parameters(), sgd_for_d(local), rho=0.1, alpha=0.4).step(Recorder(local, xs, ys))
            ds.append([p.grad for p in local.parameters()])
        for p, d0, d1 in zip(model.parameters(), *ds):
            p.grad = (d0 + d1) / 2
        base.step()
    for a, b in zip(model.parameters(), ranks[0]["gsam_local"]["weights"]):
        torch.testing.assert_close(a.detach(), b, rtol=1e-12, atol=1e-14)


def test_bucket_view_gradients_give_the_same_steps(ranks):
    """With gradient_as_bucket_view DDP reuses its buckets: the kept gradients must be copies."""
    assert_same_weights(ranks[0]["gsam_local"]["weights"], ranks[0]["gsam_local_bv"]["weights"])


@pytest.mark.parametrize("name", ["gsam_local", "sam_local", "xsam_local", *GROUP_SCENARIOS])
def test_per_worker_mode_all_reduces_d_once_per_step(ranks, name):
    """With or without perturbation groups: one all-reduce of d; XSAM adds one broadcast of rank 0's probe
    losses on a search step."""
    cls, kw = (SCENARIOS.get(name) or GROUP_SCENARIOS[name])[:2]
    numel = sum(p.numel() for p in mlp(bn=name in GROUP_SCENARIOS).parameters())
    for i, step in enumerate(ranks[0][name]["counts"]):
        assert step["ddp_buckets"] == 0  # no gradient communication in any pass
        searched = cls is gsam.XSAM and i % kw["search_every"] == 0
        assert step["all_reduce_calls"] == 1
        assert step["all_reduce_numel"] == numel  # one bucket: the volume of vanilla DDP
        assert step["broadcasts"] == int(searched)


@pytest.mark.parametrize("name", list(GROUP_SCENARIOS))
def test_two_processes_of_two_groups_equal_one_process_of_four(ranks, name):
    """Perturbation groups make the update independent of the process count (float64, BN, gloo).

    XSAM without search images: rank 0's group 0, which is the single process's group 0, chooses alpha* for
    every rank; given alpha* the rest of the update is identical."""
    cls, kw = GROUP_SCENARIOS[name]
    x, y = batch(seed=1, n=32)
    model = mlp(seed=0, bn=True)
    base = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    opt = cls(model.parameters(), base, rho=0.1, model=model, **kw)
    groups = 2 * GROUPS
    closures = [Recorder(model, xg, yg) for xg, yg in zip(x.chunk(groups), y.chunk(groups))]
    alphas = [opt.step(closures).alpha for _ in range(STEPS)]
    for a, b in zip(model.parameters(), ranks[0][name]["weights"]):
        torch.testing.assert_close(a.detach(), b, rtol=1e-12, atol=1e-14)
    assert alphas == ranks[0][name]["alphas"] == ranks[1][name]["alphas"]
    # running statistics: rank 0's group 0 is the single process's group 0
    for a, b in zip(model.buffers(), ranks[0][name]["buffers"]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["gsam_sync", "xsam_sync", "xsam_sync_bv", "gsam_sync_plain"])
def test_sync_perturbation_equals_one_process_on_the_whole_batch(ranks, name):
    cls, kw, _, wrapped = SCENARIOS[name]
    x, y = batch(seed=1, n=32)
    model = mlp(seed=0)
    base = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    opt = cls(model.parameters(), base, rho=0.1, **kw)
    alphas = [opt.step(Recorder(model, x, y)).alpha for _ in range(STEPS)]
    for a, b in zip(model.parameters(), ranks[0][name]["weights"]):
        torch.testing.assert_close(a.detach(), b, rtol=1e-12, atol=1e-14)
    assert alphas == ranks[0][name]["alphas"]
    passes = kw.get("steps", 1) + 1
    for i, step in enumerate(ranks[0][name]["counts"]):
        searched = cls is gsam.XSAM and i % kw["search_every"] == 0
        if wrapped:  # DDP averages every pass; the optimizer adds only the probe-loss reduction
            assert step["ddp_buckets"] >= passes
            assert step["all_reduce_calls"] == int(searched)
        else:  # no DDP wrapper: the optimizer averages each pass itself
            assert step["all_reduce_calls"] == passes
            assert step["all_reduce_numel"] == passes * n_params()


def test_xsam_chooses_alpha_on_the_same_images_on_one_process_and_on_two(ranks):
    """alpha* from the first SEARCH_IMAGES of the global batch, whatever the number of processes. Two ranks
    hold the interleaved halves the training sampler deals them; one process holds the whole batch, in
    groups that make its update the two ranks' average. Each step's 21 probe losses are the same numbers
    (so the same alpha*), and so are the weights after STEPS steps."""
    cls, kw = SEARCH_SCENARIO
    x, y = batch(seed=1, n=32)
    model = mlp(seed=0, bn=True)
    opt = cls(model.parameters(), torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), model=model, **kw)
    shards = [(x[r::2], y[r::2]) for r in range(2)]
    closures = [Recorder(model, xg, yg) for xs, ys in shards for xg, yg in zip(xs.chunk(GROUPS), ys.chunk(GROUPS))]
    alphas, probes = [], []
    for _ in range(STEPS):
        opt.search_closure = head_closure(model, opt, F.cross_entropy, x, y, SEARCH_IMAGES, search_plan())
        alphas.append(opt.step(closures).alpha)
        probes.append(opt.last_probe_losses.clone())
    for rank in ranks:
        got = rank["xsam_search"]
        assert got["alphas"] == alphas
        for a, b in zip(got["probe_losses"], probes):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=0)
        for a, b in zip(model.parameters(), got["weights"]):
            torch.testing.assert_close(a.detach(), b, rtol=1e-10, atol=1e-12)
    assert all(0.0 < a < 2.0 for a in alphas)  # inside the grid: the probe losses decided, not its edge
