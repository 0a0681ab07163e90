"""Run under ``torchrun --nproc_per_node=2`` (gloo, CPU) by the ``ddp_ranks`` fixture (tests/conftest.py), for
test_distributed.py, test_efficient_ddp.py, test_analysis_ddp.py and test_bn_stats.py: one launch for all of them,
torchrun's start-up being most of the cost.

Each rank runs the bucketed all-reduce on its own tensors, the analysis on its half of the batches, and every
optimizer scenario on its half of a fixed batch (test_bn_stats.py: BatchNorm's running statistics of every
method), and saves what the tests compare into OUT/rank{r}.pt.
"""
import copy
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from gsam.run.engine import head_closure, make_closures
from gsam.optim.comm import all_reduce_mean_
from support.analysis_case import measure, setup
from support.ddp_cases import (BN_SCENARIOS, BUCKET_BYTES, EFFICIENT_SCENARIOS, GROUP_SCENARIOS, GROUPS, SCENARIOS,
                               SEARCH_IMAGES, SEARCH_SCENARIO, STEPS, bn_run, comm_inputs, efficient_optimizer,
                               search_plan)
from support.nets import Recorder, batch, mlp


def bucketed_all_reduce(rank: int) -> dict:
    """all_reduce_mean_ on ``comm_inputs(rank)``, watching its all-reduces: the size of each, and how many were
    issued and not yet waited for at any time."""
    tensors = comm_inputs(rank)
    watch = {"numels": [], "in_flight": 0, "max_in_flight": 0}
    real_all_reduce = dist.all_reduce

    class Watched:
        def __init__(self, work):
            self.work = work
            watch["in_flight"] += 1
            watch["max_in_flight"] = max(watch["max_in_flight"], watch["in_flight"])

        def wait(self):
            watch["in_flight"] -= 1
            return self.work.wait()

    def watched_all_reduce(tensor, *args, **kwargs):
        watch["numels"].append(tensor.numel())
        work = real_all_reduce(tensor, *args, **kwargs)
        return Watched(work) if kwargs.get("async_op") else work

    dist.all_reduce = watched_all_reduce
    try:
        all_reduce_mean_(tensors, bucket_bytes=BUCKET_BYTES)
    finally:
        dist.all_reduce = real_all_reduce
    return {**watch, "tensors": tensors}


def xsam_search(rank: int, world: int) -> dict:
    """XSAM with its search on the global batch's first images, this rank holding the rows the training
    sampler deals it (r, r + W, ...), in GROUPS perturbation groups, under DDP with BatchNorm."""
    cls, kw = SEARCH_SCENARIO
    x, y = batch(seed=1, n=32)
    x, y = x[rank::world], y[rank::world]
    net = mlp(seed=0, bn=True)
    model = DDP(net)
    opt = cls(net.parameters(), torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9), model=model, **kw)
    closures = [Recorder(model, xg, yg) for xg, yg in zip(x.chunk(GROUPS), y.chunk(GROUPS))]
    alphas, probes = [], []
    for _ in range(STEPS):
        opt.search_closure = head_closure(model, opt, F.cross_entropy, x, y, SEARCH_IMAGES, search_plan())
        alphas.append(opt.step(closures).alpha)
        probes.append(opt.last_probe_losses.clone())
    return {"alphas": alphas, "probe_losses": probes, "weights": [p.detach().clone() for p in net.parameters()]}


def main(out: Path) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    x, y = batch(seed=1, n=32)
    x, y = x.chunk(world)[rank], y.chunk(world)[rank]
    model, batches = setup()
    results = {"comm": bucketed_all_reduce(rank), "analysis": measure(model, batches[rank::world]),
               "xsam_search": xsam_search(rank, world),
               "bn": {name: bn_run(name, x, y, GROUPS, wrap=DDP) for name in BN_SCENARIOS}}
    counts = {"all_reduce_calls": 0, "all_reduce_numel": 0, "ddp_buckets": 0, "broadcasts": 0}
    real_all_reduce, real_broadcast = dist.all_reduce, dist.broadcast

    def counting_all_reduce(tensor, *args, **kwargs):
        counts["all_reduce_calls"] += 1
        counts["all_reduce_numel"] += tensor.numel()
        return real_all_reduce(tensor, *args, **kwargs)

    def counting_hook(state, bucket):  # DDP's default all-reduce, counted apart from the optimizer's
        counts["ddp_buckets"] += 1
        fut = real_all_reduce(bucket.buffer().div_(world), async_op=True).get_future()
        return fut.then(lambda f: f.value()[0])

    def counting_broadcast(tensor, *args, **kwargs):
        counts["broadcasts"] += 1
        return real_broadcast(tensor, *args, **kwargs)

    dist.all_reduce, dist.broadcast = counting_all_reduce, counting_broadcast
    scenarios = {**{name: (cls, kw, sync, wrap, 1, False) for name, (cls, kw, sync, wrap) in SCENARIOS.items()},
                 **{name: (cls, kw, False, True, GROUPS, True) for name, (cls, kw) in GROUP_SCENARIOS.items()}}
    def run(net, opt, closures) -> dict:
        """STEPS steps, the collectives of each counted; the weights before each step, each step's h (NaN on a
        one-pass step) and the end state."""
        per_step, alphas, gaps, trajectory = [], [], [], []
        for _ in range(STEPS):
            for k in counts:
                counts[k] = 0
            trajectory.append([p.detach().clone() for p in net.parameters()])
            stats = opt.step(closures if len(closures) > 1 else closures[0])
            per_step.append(dict(counts))
            alphas.append(stats.alpha)
            gaps.append(stats.surrogate_gap)
        return {"weights": [p.detach().clone() for p in net.parameters()],
                "buffers": [b.clone() for b in net.buffers()], "counts": per_step, "alphas": alphas,
                "probe_losses": getattr(opt, "last_probe_losses", None), "gaps": gaps, "trajectory": trajectory,
                "state": copy.deepcopy(opt.state_dict())}

    def wrapped(net, bucket_view=False):
        model = DDP(net, gradient_as_bucket_view=bucket_view)
        model.register_comm_hook(None, counting_hook)
        return model

    for name, (cls, kw, sync, wrap, groups, bn) in scenarios.items():
        net = mlp(seed=0, bn=bn)
        model = wrapped(net, name.endswith("_bv")) if wrap else net
        base = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
        opt = cls(net.parameters(), base, rho=0.1, model=model, sync_perturbation=sync, **kw)
        results[name] = run(net, opt, [Recorder(model, xg, yg) for xg, yg in zip(x.chunk(groups), y.chunk(groups))])
    for name, (_, _, bn) in EFFICIENT_SCENARIOS.items():
        net = mlp(seed=0, bn=bn)
        model = wrapped(net)
        opt = efficient_optimizer(name, net, model)
        results[name] = run(net, opt, make_closures(model, opt, F.cross_entropy, x, y, GROUPS, 1, None))
    torch.save(results, out / f"rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
