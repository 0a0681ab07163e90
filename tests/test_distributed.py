"""Data parallel with real torchrun (2 processes, gloo, CPU): per-worker and synchronised perturbation."""
import copy

import pytest
import torch

import gsam
from support.ddp_cases import COMM_BUCKET_NUMELS, COMM_SHAPES, GROUP_SCENARIOS, GROUPS, SCENARIOS, STEPS, comm_inputs
from support.nets import Recorder, batch, mlp, sgd_for_d


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
        for got, want in zip(comm["tensors"], mean):
            assert torch.equal(got, want)
    assert not all(torch.equal(a, b) for a, b in zip(comm_inputs(0), comm_inputs(1)))  # there was something to average


def n_params():
    return sum(p.numel() for p in mlp().parameters())


def closure_for(model, x, y):
    return Recorder(model, x, y)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SCENARIOS) + list(GROUP_SCENARIOS))
def test_ranks_stay_identical(ranks, name):
    r0, r1 = ranks[0][name], ranks[1][name]
    for a, b in zip(r0["weights"], r1["weights"]):
        assert torch.equal(a, b)
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
            gsam.GSAM(local.parameters(), sgd_for_d(local), rho=0.1, alpha=0.4).step(closure_for(local, xs, ys))
            ds.append([p.grad for p in local.parameters()])
        for p, d0, d1 in zip(model.parameters(), *ds):
            p.grad = (d0 + d1) / 2
        base.step()
    for a, b in zip(model.parameters(), ranks[0]["gsam_local"]["weights"]):
        torch.testing.assert_close(a.detach(), b, rtol=1e-12, atol=1e-14)


def test_bucket_view_gradients_give_the_same_steps(ranks):
    """With gradient_as_bucket_view DDP reuses its buckets: the kept gradients must be copies."""
    for a, b in zip(ranks[0]["gsam_local"]["weights"], ranks[0]["gsam_local_bv"]["weights"]):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["gsam_local", "sam_local", "xsam_local", *GROUP_SCENARIOS])
def test_per_worker_mode_all_reduces_d_once_per_step(ranks, name):
    """With or without perturbation groups: one all-reduce of d (+ XSAM's probe losses on a search step)."""
    cls, kw = (SCENARIOS.get(name) or GROUP_SCENARIOS[name])[:2]
    numel = sum(p.numel() for p in mlp(bn=name in GROUP_SCENARIOS).parameters())
    for i, step in enumerate(ranks[0][name]["counts"]):
        assert step["ddp_buckets"] == 0  # no gradient communication in any pass
        searched = cls is gsam.XSAM and i % kw["search_every"] == 0
        extra = len(gsam.optim.xsam.DEFAULT_ALPHA_GRID) if searched else 0  # probe losses
        assert step["all_reduce_calls"] == 1 + (extra > 0)
        assert step["all_reduce_numel"] == numel + extra  # one bucket: the volume of vanilla DDP


@pytest.mark.parametrize("name", list(GROUP_SCENARIOS))
def test_two_processes_of_two_groups_equal_one_process_of_four(ranks, name):
    """Perturbation groups make the update independent of the process count (float64, BN, gloo).

    XSAM: each process searches on its group 0 and the probe losses are averaged over ranks, so two
    processes choose alpha* from groups 0 and 2 where one process uses group 0 alone; the alphas are
    asserted equal here (they are, for this seed), and given alpha* the rest of the update is identical."""
    cls, kw = GROUP_SCENARIOS[name]
    x, y = batch(seed=1, n=32)
    model = mlp(seed=0, bn=True)
    base = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    opt = cls(model.parameters(), base, rho=0.1, model=model, **kw)
    groups = 2 * GROUPS
    closures = [closure_for(model, xg, yg) for xg, yg in zip(x.chunk(groups), y.chunk(groups))]
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
    alphas = [opt.step(closure_for(model, x, y)).alpha for _ in range(STEPS)]
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
