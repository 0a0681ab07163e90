"""The optimizer scenarios tests/ddp_worker.py runs on 2 ranks and test_distributed.py recomputes on one
process: both sides read them from here."""
import torch

import gsam

SCENARIOS = {
    # name: (class, kwargs, sync_perturbation, wrap in DDP); "_bv": DDP(gradient_as_bucket_view=True)
    "gsam_local": (gsam.GSAM, {"alpha": 0.4}, False, True),
    "gsam_local_bv": (gsam.GSAM, {"alpha": 0.4}, False, True),
    "xsam_sync_bv": (gsam.XSAM, {"steps": 2, "search_every": 2, "rho_probe": 0.2}, True, True),
    "sam_local": (gsam.SAM, {}, False, True),
    "xsam_local": (gsam.XSAM, {"steps": 2, "search_every": 1, "rho_probe": 0.2}, False, True),
    "gsam_sync": (gsam.GSAM, {"alpha": 0.4}, True, True),
    "xsam_sync": (gsam.XSAM, {"steps": 2, "search_every": 2, "rho_probe": 0.2}, True, True),
    "gsam_sync_plain": (gsam.GSAM, {"alpha": 0.4}, True, False),
}
# name: (class, kwargs): per-worker perturbation, DDP, a BatchNorm model and GROUPS perturbation groups per rank
GROUP_SCENARIOS = {
    "sam_groups": (gsam.SAM, {}),
    "gsam_groups": (gsam.GSAM, {"alpha": 0.4}),
    "xsam_groups": (gsam.XSAM, {"steps": 2, "search_every": 2, "rho_probe": 0.2}),
}
GROUPS = 2
STEPS = 3
# the efficient variants, through the trainer's closures (gsam.run.engine.make_closures, where MESA's loss term
# enters): k = 2 over STEPS steps is a full step, a one-pass step and the next cycle's full step. Per-worker
# perturbation in GROUPS groups per rank on the BatchNorm model; MESA has no groups (its closure is vanilla's, the
# whole batch, DDP synchronising its one backward) and runs on the LayerNorm model, because without SyncBatchNorm
# two ranks normalise over their own halves and no BatchNorm model on two ranks equals one process
EFFICIENT_SCENARIOS = {
    # name: (class, kwargs, BatchNorm)
    "every_k": (gsam.EveryK, {"k": 2}, True),
    "looksam": (gsam.LookSAM, {"k": 2, "alpha": 0.7}, True),
    "lookgsam": (gsam.LookSAM, {"k": 2, "alpha": 0.7, "gsam_alpha": 0.4}, True),
    "mesa": (gsam.MESA, {"lam": 0.8, "tau": 5.0, "decay": 0.5}, False),
}
EFFICIENT_RHO = 0.1


def efficient_optimizer(name: str, net: torch.nn.Module, model: torch.nn.Module | None = None):
    """The scenario's optimizer over ``net`` (``model``: its DDP wrapper, or ``net`` itself on one process)."""
    cls, kw, _ = EFFICIENT_SCENARIOS[name]
    base = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    return cls(net.parameters(), base, rho=EFFICIENT_RHO, model=net if model is None else model, **kw)


# XSAM's alpha* search on the first SEARCH_IMAGES of the global batch (gsam.run.engine.head_closure), with the
# batch dealt out to the ranks as the training sampler deals it (rank r: global rows r, r + W, ...)
SEARCH_SCENARIO = (gsam.XSAM, {"rho": 0.5, "steps": 1, "search_every": 1, "rho_probe": 1.0})  # an interior alpha*
SEARCH_IMAGES = 16


def search_plan():
    """The fields of gsam.run.engine.StepPlan that head_closure reads: the search in 2 forward passes."""
    from types import SimpleNamespace

    return SimpleNamespace(max_forward=SEARCH_IMAGES // 2, amp_dtype=None)

# gsam.optim.comm.all_reduce_mean_ on its own: tensors of two dtypes (a bucket never mixes them) and buckets of
# BUCKET_BYTES, so that float64 fills three buckets (5+3, 8, 1+7 elements of 8 bytes) and float32 one (4+9):
# four all-reduces, at most two in flight
BUCKET_BYTES = 64
COMM_SHAPES = [(torch.float64, (5,)), (torch.float32, (2, 2)), (torch.float64, (3,)), (torch.float64, (2, 4)),
               (torch.float32, (9,)), (torch.float64, (1,)), (torch.float64, (7,))]
COMM_BUCKET_NUMELS = [8, 8, 8, 13]


def comm_inputs(rank: int) -> list[torch.Tensor]:
    """Rank ``rank``'s tensors: integers and halves, so that the mean of two ranks is exact in any order."""
    g = torch.Generator().manual_seed(100 + rank)
    return [torch.randint(-50, 50, shape, generator=g).to(dtype) / 2 for dtype, shape in COMM_SHAPES]


# BatchNorm's running statistics, once per step in every method (gsam.optim.base.SharpnessAware.micro_batch): each
# method through the trainer's closures on the BatchNorm model, GROUPS perturbation groups of BN_ACCUM micro-batches
# per rank (vanilla and MESA: one closure of GROUPS * BN_ACCUM micro-batches), micro-batches of 4 images on one
# process (32 images) and on two (16 each); rank 0's first micro-batch is the single process's
BN_ACCUM = 2
BN_SCENARIOS = {
    # name: (class, kwargs)
    "vanilla": (gsam.Vanilla, {}),
    "sam": (gsam.SAM, {}),
    "gsam": (gsam.GSAM, {"alpha": 0.4}),
    "xsam": (gsam.XSAM, {"steps": 2, "search_every": 1, "rho_probe": 0.2}),
    "every_k": (gsam.EveryK, {"k": 2}),
    "looksam": (gsam.LookSAM, {"k": 2, "alpha": 0.7}),
    "mesa": (gsam.MESA, {"lam": 0.8, "tau": 5.0, "decay": 0.5}),
}


def bn_run(name: str, x: torch.Tensor, y: torch.Tensor, groups: int, wrap=None) -> dict:
    """STEPS steps of the scenario from the same start: num_batches_tracked of the BatchNorm layer after each step,
    the buffers after the first step and at the end. ``wrap``: the DDP wrapper's constructor (None: one process)."""
    import torch.nn.functional as F

    from gsam.run.engine import make_closures
    from support.nets import mlp

    cls, kw = BN_SCENARIOS[name]
    net = mlp(seed=0, bn=True)
    model = net if wrap is None else wrap(net)
    opt = cls(net.parameters(), torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9), rho=EFFICIENT_RHO,
              model=model, **kw)
    counts, first = [], None
    for _ in range(STEPS):
        opt.step(make_closures(model, opt, F.cross_entropy, x, y, groups, BN_ACCUM, None))
        counts.append(int(net[1].num_batches_tracked))
        first = first or [b.clone() for b in net.buffers()]
    return {"counts": counts, "first": first, "buffers": [b.clone() for b in net.buffers()]}
