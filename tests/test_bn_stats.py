"""BatchNorm's running statistics are updated exactly once per step on each process, in every method, whatever the
number of micro-batches and processes (gsam.optim.base.SharpnessAware.micro_batch: which and why): from the first
micro-batch of group 0's clean pass. Before, vanilla updated them once per forward (here 8 times a step on one
process, 4 on each of two) and the sharpness-aware methods once per micro-batch of group 0's clean pass (2 here).

Every method of support.ddp_cases.BN_SCENARIOS through the trainer's closures (gsam.run.engine.make_closures) on a
float64 BatchNorm MLP: 32 images in 2 * GROUPS perturbation groups of BN_ACCUM micro-batches of 4 images on one
process, and the same on two torchrun processes of 16 images each (the session's ``ddp_ranks``)."""
import pytest
import torch

from support.ddp_cases import BN_SCENARIOS, GROUPS, STEPS, bn_run
from support.nets import batch, mlp

NAMES = list(BN_SCENARIOS)
MOMENTUM = 0.1  # torch's BatchNorm default


@pytest.fixture(scope="module")
def one_process():
    x, y = batch(seed=1, n=32)
    return {name: bn_run(name, x, y, 2 * GROUPS) for name in NAMES}


def first_micro_batch_update() -> list[torch.Tensor]:
    """The buffers after one BatchNorm update from the batch's first micro-batch of 4 images at the initial weights,
    written out: running = (1 - momentum) running + momentum * batch statistic (the unbiased variance)."""
    net = mlp(seed=0, bn=True)
    x, _ = batch(seed=1, n=32)
    with torch.no_grad():
        h = net[0](x[:4])
    bn = net[1]
    return [(1 - MOMENTUM) * bn.running_mean + MOMENTUM * h.mean(0),
            (1 - MOMENTUM) * bn.running_var + MOMENTUM * h.var(0, unbiased=True), torch.tensor(1)]


@pytest.mark.parametrize("name", NAMES)
def test_one_update_per_step_on_one_process(one_process, name):
    """num_batches_tracked counts the updates: 1, 2, 3 after 3 steps; the first step's statistics are those of the
    first micro-batch alone (so every method starts from the same statistics)."""
    got = one_process[name]
    assert got["counts"] == list(range(1, STEPS + 1)), f"{name}: updates after each step {got['counts']}"
    for a, b in zip(got["first"], first_micro_batch_update()):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-15)


@pytest.mark.slow  # the session's torchrun fixture (ddp_ranks): ~15 s
@pytest.mark.parametrize("name", NAMES)
def test_one_update_per_step_on_each_of_two_processes(ddp_ranks, one_process, name):
    """Both ranks count one update per step; rank 0's statistics (its first micro-batch is the single process's) are
    the single process's, step after step. Not MESA's after the first step: its teacher averages each rank's own
    statistics, so rank 1's KL term, and with it the weights, differ from one process's (support.ddp_cases)."""
    for rank in ddp_ranks:
        got = rank["bn"][name]["counts"]
        assert got == list(range(1, STEPS + 1)), f"{name}: updates after each step {got}"
    rank0, one = ddp_ranks[0]["bn"][name], one_process[name]
    for a, b in zip(rank0["first"] + ([] if name == "mesa" else rank0["buffers"]),
                    one["first"] + ([] if name == "mesa" else one["buffers"])):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
