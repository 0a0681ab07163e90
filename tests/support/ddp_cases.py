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
