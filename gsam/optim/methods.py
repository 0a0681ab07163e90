"""The shipped methods, registered by name (``sam.name``): each one's class, the keys of its
``configs/sam/<name>.yaml`` with their defaults and the sources of those values, and its checks. The YAML files
are written from here (``python -m gsam.config.sam_files``; tests/test_registry_defaults.py fails on drift), so a
default is changed here and nowhere else."""
from __future__ import annotations

import warnings
from collections.abc import Mapping

from .baselines import GSAMMinF, WeightedGap
from .every_k import EveryK
from .gsam import GSAM
from .looksam import LookSAM
from .mesa import MESA
from .registry import REQUIRED, Key, Method, Need, Same, at_least, flag, integer, is_int, register, with_defaults
from .sam import SAM
from .vanilla import Vanilla
from .xsam import XSAM

# every perturbing method: the radius rho_t between rho_min and rho_max (each method gives their defaults), the
# perturbation groups (sam.m)
RADIUS = {
    "rho_max": Key("rho", default=REQUIRED),
    "rho_min": Key("rho_min", ok=lambda v, sam: v is not None and 0 <= float(v) <= float(sam["rho_max"]),
                   expected="expected 0 <= sam.rho_min <= sam.rho_max"),
}
GROUPS = {
    "sync_perturbation": flag("sync_perturbation"),
    "m": Key(None, int, lambda v, _: v is None or (is_int(v) and v > 0),
             "expected null (the whole per-process batch) or an integer > 0 (images per perturbation group)",
             note="images per perturbation group (m-sharpness); null = the whole per-process batch"),
}
PERTURBATION = {**RADIUS, **GROUPS}
ADAPTIVE = {"adaptive": flag("adaptive")}  # ASAM's scale-invariant radius on top of the method
PERIOD = {"k": integer("k", 1, " (the full sharpness-aware step every k steps)")}
SAME_RHO = Same("rho_max")  # rho_min = rho_max: a constant radius (YAML: ${sam.rho_max})


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


register(Method(
    "none", Vanilla, {}, perturbs=False,
    summary="vanilla training: the base optimizer alone (Table 1's vanilla rows)",
    doc="Vanilla training: the base optimizer alone."))

register(Method(
    "sam", SAM, with_defaults(RADIUS, GROUPS, rho_max=0.05, rho_min=SAME_RHO, sync_perturbation=(
        False, "false: per-worker perturbation (m-sharpness), as the paper")),
    summary="SAM (Foret et al. 2021): the gradient at w + rho g/||g||, rho constant",
    doc="SAM: constant rho (rho_min = rho_max); experiments set the value and cite it."))

register(Method(
    "asam", SAM, with_defaults(RADIUS, GROUPS, rho_max=0.5, rho_min=SAME_RHO), fixed={"adaptive": True},
    summary="ASAM (Kwon et al. 2021): SAM with the scale-invariant radius rho |w|",
    doc="ASAM (adaptive SAM, the PyTorch references' form): rho ~10x SAM's (GSAM paper App. B.1, Kwon et al. "
        "2021)."))

# GSAM's keys and defaults, shared by its Fig. 6 ablation (gsam_min_f), which changes only the update
GSAM_KEYS = with_defaults(RADIUS, {"alpha": at_least("alpha", 0)}, ADAPTIVE, GROUPS, rho_max=0.04, rho_min=0.02,
                          alpha=0.01)

register(Method(
    "gsam", GSAM, GSAM_KEYS,
    check=warn_large_alpha,
    summary="GSAM (Zhuang et al. 2022, Algorithm 1): g_p - alpha g_perp, rho_t following the lr",
    doc="GSAM (Algorithm 1): rho_t from the lr of the same step between rho_min and rho_max; alpha on g_perp."))

register(Method(
    "xsam", XSAM, with_defaults(
        RADIUS, {"rho_probe": at_least("rho_probe", 0), "steps": integer("steps", 1),
                 "alpha": at_least("alpha", 0),
                 "search_every_epochs": integer("search_every_epochs", 0, " (0 = never)"),
                 "search_every": integer("search_every", 0, " (0 = never)"),
                 "search_images": Key("search_images", int, numeric=False)}, GROUPS,
        rho_max=(0.05, "the official --rho (ascent length), not the official --rho_max"),
        rho_min=SAME_RHO,
        rho_probe=(0.1, "the official --rho_max (probe radius; 2 rho, the official default ratio)"),
        steps=(1, "the official --steps, k"),
        alpha=(1.0, "the official --alpha: alpha* until the first search (1.0 = SAM; searched at once when\n"
                    "search_every_epochs > 0, as --is_dynamic)"),
        # 1: XSAM is its search; the official code's --is_dynamic searches once per epoch, on the first batch
        # (`update_alpha = is_dynamic and batch_idx == 1`). 0 would leave alpha* = 1.0 for good: SAM, not XSAM.
        search_every_epochs=(1, "counted on the loop's epoch and step; 0 = never search (--is_dynamic off)"),
        search_every=(0, "also every N steps (the loop's step count, skipped steps included); 0 = only on the\n"
                         "epoch cadence above. Not in the official code; for runs whose epochs are long"),
        search_images=(None, "alpha* is chosen on the first N images of the global batch, the same images on 1 or\n"
                             "64 GPUs (gathered on every rank); null = the whole global batch, as the official\n"
                             "single-GPU code searches on its whole batch")),
    check=check_xsam,
    summary="XSAM (Chen & Zhou 2026): the direction searched (alpha*) in the plane of the ascent and g_k",
    doc="""XSAM: constant rho (total ascent length), probe radius 2 rho and a search of alpha* at the first
step of every epoch, as the official code's `batch_idx == 1` (Cccjl219/XSAM train.py, --is_dynamic).
NAMES: our rho_max is NOT the official --rho_max. Official flag -> our key (docs/optimizers.md, the full table):
  --rho 0.15     -> sam.rho_max 0.15    the total ascent length (k steps of rho/k); rho_max, as every method's
                                        ascent radius here (rho_min = rho_max: constant). With --steps k > 1 the
                                        official train.py passes --rho / --steps to the optimizer (line 49), whose
                                        first_step moves that on each step: rho in all, as here (test_xsam_ksteps)
  --rho_max 0.3  -> sam.rho_probe 0.3   the radius at which the alpha* candidates are probed, only for the search
So the official `--rho 0.15 --rho_max 0.3 --is_dynamic` is `sam.rho_max=0.15 sam.rho_probe=0.3` here."""))

register(Method(
    "weighted_gap", WeightedGap, with_defaults(RADIUS, {"lam": at_least("lam", 0)}, ADAPTIVE, GROUPS,
                                               rho_max=0.04, rho_min=0.02, lam=0.1),
    summary="Table 2's baseline: minimise f_p + lam h directly, d = (1 + lam) g_p - lam g",
    doc="Table 2's baseline: minimise f_p + lam h directly, d = (1 + lam) g_p - lam g (gsam/optim/baselines.py).\n"
        "rho as GSAM's (from the lr of the same step); the paper searches lam on the grid of alpha."))

register(Method(
    "gsam_min_f", GSAMMinF, GSAM_KEYS,
    check=warn_large_alpha,
    summary="Fig. 6 (right)'s ablation: min(f, h) instead of GSAM's min(f_p, h)",
    doc="Fig. 6 (right): min(f, h) instead of GSAM's min(f_p, h): d = g + alpha g_p_perp (big_vision "
        "minimize_fp=False)."))

register(Method(
    "every_k", EveryK, with_defaults(
        RADIUS, PERIOD, ADAPTIVE, GROUPS,
        rho_max=(0.5, "Composer's value at k = 10 (10 x SAM's 0.05), constant"), rho_min=SAME_RHO,
        k=(10, "Composer's interval")),
    summary="SAM every k steps, the base step in between (Composer's SAM interval)",
    doc="SAM every k steps, the base step between (Composer's SAM `interval`; gsam/optim/every_k.py). Composer's "
        "ImageNet\n"
        """recipe (composer/algorithms/sam/README.md): interval 10 with rho 0.5 ("when adjusting interval, it is best to
adjust rho proportionally": 10 x SAM's 0.05); it reports +0.7% top-1 on ResNet-50 (90 epochs) for about 7% less
throughput."""))

register(Method(
    "looksam", LookSAM, with_defaults(
        RADIUS, PERIOD, {"alpha": at_least("alpha", 0)}, ADAPTIVE, GROUPS,
        rho_max=(0.05, "SAM's ImageNet rho (Foret et al. 2021); experiments set the row's SAM rho"),
        rho_min=SAME_RHO,
        k=(5, "LookSAM-5, the period of the paper's ImageNet ViT rows"),
        alpha=(0.1, "the reuse strength. No value could be read in the LookSAM paper; the small study chose\n"
                    "0.1 on minival (80.00) over 0.7 (47.02), the re-implementations' default\n"
                    "(Leminhbinh0209/LookSAM), whose in-between steps push along g_v at 0.7x ||g||\n"
                    "(docs/analysis.md §6.3)")),
    fixed={"gsam_alpha": 0.0},
    summary="LookSAM (Liu et al. 2022): SAM every k steps, its g_v reused in between",
    doc="""LookSAM (Liu et al., CVPR 2022, Algorithm 1; gsam/optim/looksam.py): the ascent every k steps, the stored g_v
(the part of SAM's gradient orthogonal to g) reused in between as g + alpha ||g||/||g_v|| g_v."""))

register(Method(
    "lookgsam", LookSAM, with_defaults(
        RADIUS, {"gsam_alpha": at_least("gsam_alpha", 0)}, PERIOD, {"alpha": at_least("alpha", 0)}, ADAPTIVE,
        GROUPS,
        rho_max=(0.04, "GSAM's defaults (sam/gsam.yaml); experiments set their row of Table 4"), rho_min=0.02,
        gsam_alpha=(0.01, "GSAM's alpha on g_perp (sam/gsam.yaml's alpha)"), k=(5, "as sam/looksam.yaml"),
        alpha=(0.1, "LookSAM's reuse strength, as sam/looksam.yaml (its source there)")),
    summary="LookGSAM (ours, in neither paper): LookSAM's reuse applied to GSAM's step",
    doc="""LookGSAM (ours, in neither paper; gsam/optim/looksam.py): LookSAM's reuse applied to GSAM's update. Every k
steps a GSAM step (Algorithm 1: rho_t from the lr, d = g_p - gsam_alpha g_perp) whose part orthogonal to g is
stored; in between d = g + alpha ||g||/||g_v|| g_v."""))

register(Method(
    "mesa", MESA, with_defaults(
        {"lam": at_least("lam", 0),
         "tau": Key("tau", float, lambda v, _: v is not None and float(v) > 0,
                    "expected > 0 (the temperature of the KL term)"),
         "decay": Key("decay", float, lambda v, _: v is not None and 0 <= float(v) <= 1, "expected 0 <= decay <= 1"),
         "start_step": integer("start_step", 0)},
        lam=(0.8, "--reinforce"), tau=(5.0, "--temperature"),
        decay=(0.9998, "timm's --model-ema-decay default, which the official command keeps"),
        start_step=(0, "the KL term from this step on; the official --kl_start_epoch 5 counts epochs (applied\n"
                       "from epoch 6: `epoch > kl_start_epoch`): 6 x steps per epoch, 1854 at batch 4096 on\n"
                       "ImageNet (309 whole batches of the 99% left after minival); experiments set it")),
    perturbs=False,
    summary="MESA (Du et al. 2022): vanilla's step on CE plus a KL term to an EMA teacher",
    doc="""MESA (Du et al., NeurIPS 2022; gsam/optim/mesa.py): vanilla's step on CE + lam tau^2 KL(softmax(z_ema/tau) ||
softmax(z/tau)), the teacher an EMA of the weights (one extra forward pass). Values: the official ImageNet
ResNet-50 command (github.com/AngusDujw/SAF, run.sh: MESA_train.py ... --reinforce 0.8 --kl_start_epoch 5
--model-ema) and its defaults (README: temperature 5; timm's --model-ema-decay 0.9998)."""))
