"""The shipped methods, registered by name (``sam.name``): each one's class, the keys of its
``configs/sam/<name>.yaml`` (their meaning and values are in that file) and its checks."""
from __future__ import annotations

import warnings
from collections.abc import Mapping

from .baselines import GSAMMinF, WeightedGap
from .every_k import EveryK
from .gsam import GSAM
from .looksam import LookSAM
from .mesa import MESA
from .registry import REQUIRED, Key, Method, Need, at_least, flag, integer, is_int, register
from .sam import SAM
from .vanilla import Vanilla
from .xsam import XSAM

# every perturbing method: the radius rho_t between rho_min and rho_max, the perturbation groups (sam.m)
PERTURBATION = {
    "rho_max": Key("rho", default=REQUIRED),
    "rho_min": Key("rho_min", ok=lambda v, sam: v is not None and 0 <= float(v) <= float(sam["rho_max"]),
                   expected="expected 0 <= sam.rho_min <= sam.rho_max"),
    "sync_perturbation": flag("sync_perturbation"),
    "m": Key(None, int, lambda v, _: v is None or (is_int(v) and v > 0),
             "expected null (the whole per-process batch) or an integer > 0 (images per perturbation group)"),
}
ADAPTIVE = {"adaptive": flag("adaptive")}  # ASAM's scale-invariant radius on top of the method
PERIOD = {"k": integer("k", 1, " (the full sharpness-aware step every k steps)")}


# The largest alpha the GSAM paper used: Table 4's ViT-S/16 row, 1.0 (its values run from 0.005 to 1.0; App. B.1's
# grids {0.01, 0.02, 0.03} and {0.1, 0.2, 0.3} and Fig. 7b's 0.05-0.25 lie inside; alpha = 0 is Table 6's no-ascent arm)
PAPER_ALPHA_MAX = 1.0


def warn_large_alpha(cfg: Mapping, need: Need) -> None:
    """GSAM's alpha scales the ascent on the orthogonal gradient (Eq. 6: g_p - alpha g_perp). The paper allows any
    real value and used 0 to 1.0 (Table 4, Table 6); above 1.0 the ascent along g_perp is longer than any the paper
    ran, most likely a value meant as a percentage, so it is said once."""
    alpha = float(cfg["sam"]["alpha"])
    if alpha > PAPER_ALPHA_MAX:
        warnings.warn(f"sam.alpha={alpha} >= 1 and above {PAPER_ALPHA_MAX:g}, the largest alpha the GSAM paper used "
                      "(Table 4's ViT-S/16): GSAM's ascent on g_perp longer than any the paper ran "
                      "(docs/optimizers.md)", stacklevel=3)


def check_xsam(cfg: Mapping, need: Need) -> None:
    """The search images fit the global batch in whole forward passes of data.max_device_batch; then a warning
    on the radii. The official XSAM flags are named the other way round (its --rho is our sam.rho_max, its
    --rho_max our sam.rho_probe), and its recipe probes at twice the ascent length. A probe inside the ascent
    radius is allowed but is what a ported command with the two names swapped looks like, so it is said once."""
    sam, batch = cfg["sam"], int(cfg["data"]["batch_size"])
    n = batch if sam.get("search_images") is None else sam["search_images"]
    need("sam.search_images", is_int(n) and 1 <= n <= batch,
         f"expected 1 to the global batch (data.batch_size={batch}); null: all of it")
    micro = min(n, int(cfg["data"].get("max_device_batch") or n))
    need("sam.search_images", n % micro == 0,
         f"{n} images are not a multiple of data.max_device_batch={micro}, the forward size")
    rho_max, rho_probe = float(sam["rho_max"]), float(sam["rho_probe"])
    if rho_probe < rho_max:
        warnings.warn(f"sam.rho_probe={rho_probe} < sam.rho_max={rho_max}: XSAM probes inside its ascent radius. "
                      "The official --rho is our sam.rho_max and the official --rho_max is our sam.rho_probe "
                      "(docs/optimizers.md)", stacklevel=3)


register(Method("none", Vanilla, {}, perturbs=False))
register(Method("sam", SAM, PERTURBATION))
register(Method("asam", SAM, PERTURBATION, fixed={"adaptive": True}))
register(Method("gsam", GSAM, {**PERTURBATION, **ADAPTIVE, "alpha": at_least("alpha", 0)}, check=warn_large_alpha))
register(Method("xsam", XSAM, {
    **PERTURBATION, "rho_probe": at_least("rho_probe", 0), "steps": integer("steps", 1, default=1),
    "alpha": at_least("alpha", 0, default=1.0), "search_every": integer("search_every", 0, " (0 = never)", default=0),
    "search_every_epochs": integer("search_every_epochs", 0, " (0 = never)", default=0),
    "search_images": Key("search_images", int, numeric=False, default=None)}, check=check_xsam))
register(Method("weighted_gap", WeightedGap, {**PERTURBATION, **ADAPTIVE, "lam": at_least("lam", 0)}))
register(Method("gsam_min_f", GSAMMinF, {**PERTURBATION, **ADAPTIVE, "alpha": at_least("alpha", 0)},
                check=warn_large_alpha))
register(Method("every_k", EveryK, {**PERTURBATION, **ADAPTIVE, **PERIOD}))
register(Method("looksam", LookSAM, {**PERTURBATION, **ADAPTIVE, **PERIOD, "alpha": at_least("alpha", 0)},
                fixed={"gsam_alpha": 0.0}))
register(Method("lookgsam", LookSAM, {**PERTURBATION, **ADAPTIVE, **PERIOD, "alpha": at_least("alpha", 0),
                                      "gsam_alpha": at_least("gsam_alpha", 0)}))
register(Method("mesa", MESA, {
    "lam": at_least("lam", 0),
    "tau": Key("tau", float, lambda v, _: v is not None and float(v) > 0,
               "expected > 0 (the temperature of the KL term)"),
    "decay": Key("decay", float, lambda v, _: v is not None and 0 <= float(v) <= 1, "expected 0 <= decay <= 1"),
    "start_step": integer("start_step", 0)}, perturbs=False))
