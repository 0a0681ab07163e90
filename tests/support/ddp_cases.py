"""The optimizer scenarios tests/ddp_worker.py runs on 2 ranks and test_distributed.py recomputes on one
process: both sides read them from here."""
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
