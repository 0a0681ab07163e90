"""The GSAM paper's Tables 1, 4 and 6 as data (Zhuang et al., ICLR 2022), the SAM rows' rho, and the efficient
variants run on Table 1's models beside it. Everything that needs the model list or a row's recipe values reads them
here: scripts/dev/make_experiments.py (the experiment files), scripts/sweep.py (the Table 1 and Table 6 sweeps and the
searches), the Table 1 and Table 6 reports (gsam/evaluation/table1.py) and the tests.

Table 1 membership is this module's list, not the files of configs/model/: a model YAML added there (another
timm family, a small CPU model) is a model like any other and no Table 1 row.
"""
from __future__ import annotations

from dataclasses import dataclass

# The recipe (configs/recipe/<name>.yaml) of each model family: Table 4 gives the ViTs and the Mixers one recipe,
# big_vision's vit_i1k_gsam_no_aug.
FAMILY_RECIPES = {"resnet": "resnet", "vit": "vit", "mixer": "vit"}


@dataclass(frozen=True)
class Row:
    """A model's row of Table 4: its family, and GSAM's rho_max, rho_min and alpha as printed."""
    family: str
    rho_max: float
    rho_min: float
    alpha: float

    @property
    def recipe(self) -> str:
        return FAMILY_RECIPES[self.family]


# GSAM paper Table 4, in Table 1's order
TABLE4 = {
    "resnet50": Row("resnet", 0.04, 0.02, 0.01),
    "resnet101": Row("resnet", 0.04, 0.02, 0.01),
    "resnet152": Row("resnet", 0.04, 0.02, 0.005),  # printed "ResNet512": the third ResNet row
    "vit_s32": Row("vit", 0.6, 0.0, 0.4),
    "vit_s16": Row("vit", 0.6, 0.0, 1.0),
    "vit_b32": Row("vit", 0.6, 0.1, 0.6),
    "vit_b16": Row("vit", 0.6, 0.2, 0.4),
    "mixer_s32": Row("mixer", 0.5, 0.0, 0.2),
    "mixer_s16": Row("mixer", 0.5, 0.0, 0.6),
    "mixer_s8": Row("mixer", 0.5, 0.1, 0.1),
    "mixer_b32": Row("mixer", 0.7, 0.2, 0.05),
    "mixer_b16": Row("mixer", 0.5, 0.2, 0.01),
}
TABLE1_MODELS = tuple(TABLE4)

# a row's training method, in the table's order (XSAM, a later method, after the paper's three)
TABLE1_METHODS = ("vanilla", "sam", "gsam", "xsam")
# the one name that differs: Table 1's "vanilla" is the ``sam`` config group "none" (no perturbation)
_SAM_NAMES = {"vanilla": "none"}

# Top-1 accuracy (%), Table 1, columns ImageNet-v1, ReaL, V2, R, C; the SAM rows are Chen et al. (2021)'s. The
# paper has no XSAM rows (a later method).
PAPER_COLUMNS = ("imagenet", "real", "v2", "r", "c")
_TABLE1 = """
resnet50  vanilla 76.0 82.4 63.6 22.2 44.6 | sam 76.9 83.3 64.4 23.8 46.5 | gsam 77.2 83.9 64.6 23.6 47.6
resnet101 vanilla 77.8 83.9 65.3 24.4 48.5 | sam 78.6 84.8 66.7 25.9 51.3 | gsam 78.9 85.2 67.3 26.3 51.8
resnet152 vanilla 78.5 84.2 66.3 25.3 50.0 | sam 79.3 84.9 67.3 25.7 52.2 | gsam 80.0 85.9 68.6 27.3 54.1
vit_s32   vanilla 68.4 75.2 54.3 19.0 43.3 | sam 70.5 77.5 56.9 21.4 46.2 | gsam 73.8 80.4 60.4 22.5 48.2
vit_s16   vanilla 74.4 80.4 61.7 20.0 46.5 | sam 78.1 84.1 65.6 24.7 53.0 | gsam 79.5 85.3 67.3 25.3 53.3
vit_b32   vanilla 71.4 77.5 57.5 23.4 44.0 | sam 73.6 80.3 60.0 24.0 50.7 | gsam 76.8 82.7 63.0 25.1 51.7
vit_b16   vanilla 74.6 79.8 61.3 20.1 46.6 | sam 79.9 85.2 67.5 26.4 56.5 | gsam 81.0 86.5 69.2 27.1 55.7
mixer_s32 vanilla 63.9 70.3 49.5 16.9 35.2 | sam 66.7 73.8 52.4 18.6 39.3 | gsam 68.6 75.8 55.0 22.6 44.6
mixer_s16 vanilla 68.8 75.1 54.8 15.9 35.6 | sam 72.9 79.8 58.9 20.1 42.0 | gsam 75.0 81.7 61.9 23.7 48.5
mixer_s8  vanilla 70.2 76.2 56.1 15.4 34.6 | sam 75.9 82.5 62.3 20.5 42.4 | gsam 76.8 83.4 64.0 24.6 47.8
mixer_b32 vanilla 62.5 68.1 47.6 14.6 33.8 | sam 72.4 79.0 58.0 22.8 46.2 | gsam 73.6 80.2 59.9 27.9 52.1
mixer_b16 vanilla 66.4 72.1 50.8 14.5 33.8 | sam 77.4 83.5 63.9 24.7 48.8 | gsam 77.8 84.0 64.9 28.3 54.4
"""

# The efficient variants, one experiment each per Table 1 model, beside Table 1 and never a row of it.
# Their values and sources: configs/method/<variant>.yaml and variant_values below.
VARIANTS = ("every_k", "looksam", "lookgsam", "mesa")

# ImageNet-1k's training images, and the steps of one epoch at the recipes' batch: the trainer holds out
# data.minival_fraction = 1% (data/folder.py: split_minival rounds) and drops the last partial batch.
IMAGENET_TRAIN_IMAGES = 1_281_167
BATCH = 4096
STEPS_PER_EPOCH = (IMAGENET_TRAIN_IMAGES - round(IMAGENET_TRAIN_IMAGES * 0.01)) // BATCH  # 309


def sam_name(method: str) -> str:
    """The ``sam`` config group that trains a Table 1 ``method`` (vanilla -> none)."""
    return _SAM_NAMES.get(method, method)


def table1_method(sam: str) -> str:
    """The Table 1 method a run of ``sam.name`` is (none -> vanilla), as results.json records it."""
    return {v: k for k, v in _SAM_NAMES.items()}.get(sam, sam)


def table1_models() -> list[str]:
    """The models of Table 1 (their configs/model/ file names), sorted."""
    return sorted(TABLE1_MODELS)


def table1_experiments() -> list[str]:
    """configs/experiment/ names of Table 1's rows, ``<model>_<method>``, in the table's order."""
    return [f"{m}_{k}" for m in TABLE1_MODELS for k in TABLE1_METHODS]


def variant_experiments() -> list[str]:
    """configs/experiment/ names of the efficient variants on Table 1's models, ``<model>_<variant>``."""
    return [f"{m}_{v}" for m in TABLE1_MODELS for v in VARIANTS]


def is_table1_row(model: str, method: str) -> bool:
    return model in TABLE4 and method in TABLE1_METHODS


def paper_table1() -> dict[tuple[str, str], dict[str, float]]:
    """{(model, method): {column: top-1 %}}."""
    table = {}
    for line in _TABLE1.strip().splitlines():
        model, rest = line.split(maxsplit=1)
        for cell in rest.split("|"):
            method, *values = cell.split()
            table[model, method] = dict(zip(PAPER_COLUMNS, map(float, values)))
    return table


# SAM's constant rho on Table 1's rows, by family: (value, source). Table 4 has no SAM row, and Table 1's SAM numbers
# are Chen et al. 2021's, whose per-model rho no stored copy gives (their appendix is missing); the rationale in full is
# in configs/method/sam.yaml and docs/recipe.md. Never GSAM's rho_max: a constant rho_max perturbs twice as far on
# average as GSAM's decaying rho_t, and it is the top of the paper's SAM grid.
_VIT_SAM_RHO = (0.15, "our choice: the middle of Fig. 4's constant rho on ViT-B/32 (0.05, 0.15, 0.2)")
SAM_RHO = {"resnet": (0.05, "Foret et al. 2021's ImageNet ResNet rho"), "vit": _VIT_SAM_RHO, "mixer": _VIT_SAM_RHO}


def sam_rho(model: str) -> tuple[float, str]:
    """The constant rho of the SAM and XSAM rows (a choice: Table 4 has no SAM row) and where it comes from."""
    return SAM_RHO[TABLE4[model].family]


# What Table 4 prints for each recipe beside rho and alpha (lr peak, weight decay); our recipes differ where
# configs/optimizer/*.yaml says so (the ResNets' weight decay: 1e-4, since 0.3 as SGD's L2 collapses the weights).
TABLE4_OPTIMIZER = {"resnet": {"lr": 1.6, "weight_decay": 0.3}, "vit": {"lr": 3e-3, "weight_decay": 0.3}}
# our recipes' own values where they are not Table 4's (configs/optimizer/sgd.yaml)
RECIPE_WEIGHT_DECAY = {"resnet": 1e-4, "vit": 0.3}

# Table 6 (App. C.2): ViT-B/32 in GSAM's own recipe, ImageNet top-1, the paper's like-for-like GSAM-against-SAM
# comparison. Its vanilla 72.0 is Table 5's 600-epoch run (Table 1's 300-epoch vanilla is 71.4).
TABLE6_MODEL = "vit_b32"
TABLE6_PAPER = {"vanilla": 72.0, "const_rho": 75.8, "const_rho_ascent": 76.2, "decayed_rho": 75.8,
                "decayed_rho_ascent": 76.8}
TABLE6_TITLES = {"vanilla": "vanilla (Table 5: 600 epochs)", "const_rho": "constant ρ (SAM)",
                 "const_rho_ascent": "constant ρ + ascent", "decayed_rho": "decayed ρ_t",
                 "decayed_rho_ascent": "decayed ρ_t + ascent (GSAM)"}
TABLE6_ARMS = ("const_rho", "const_rho_ascent", "decayed_rho", "decayed_rho_ascent")  # the four runs


def table6_experiments() -> list[str]:
    """configs/experiment/ names of Table 6's four runs, ``<model>_table6_<arm>``."""
    return [f"{TABLE6_MODEL}_table6_{arm}" for arm in TABLE6_ARMS]


def table6_values(arm: str) -> tuple[str, list[tuple[str, object, str]]]:
    """(method, [(sam key, value, source or choice)]) of one arm: both constant-rho arms at the SAM row's rho, both
    decayed arms on Table 4's schedule; the ascent arms at Table 4's alpha, the others at none."""
    row, (rho, _) = TABLE4[TABLE6_MODEL], sam_rho(TABLE6_MODEL)
    const = [("rho_max", rho, "the SAM row's rho (method/sam.yaml): Table 6 does not print its constant rho")]
    decayed = [("rho_max", row.rho_max, "Table 4's row"), ("rho_min", row.rho_min, "Table 4's row")]
    if arm == "const_rho":
        return "sam", const
    if arm == "const_rho_ascent":
        return "gsam", const + [("rho_min", rho, "= rho_max: constant"), ("alpha", row.alpha, "Table 4's alpha")]
    if arm == "decayed_rho":
        return "gsam", decayed + [("alpha", 0.0, "no ascent: Algorithm 1's rho_t schedule alone")]
    if arm == "decayed_rho_ascent":
        return "gsam", decayed + [("alpha", row.alpha, "Table 4's alpha: the GSAM row")]
    raise ValueError(f"unknown Table 6 arm {arm!r}; expected one of {TABLE6_ARMS}")


# Composer's SAM interval on ImageNet ResNet-50 (composer/algorithms/sam/README.md): every 10 steps, and rho
# "adjusted proportionally" to the interval (0.5 = 10 x SAM's 0.05)
EVERY_K = 10
# Composer's rule was measured on ResNet-50 (SGD) only. On the ViTs and Mixers k x rho is held to the largest constant
# rho the GSAM paper searched for them, 0.6 (Sec. 6.1: 0.05 to 0.6): 10 x 0.15 = 1.5 would be 2.5x past it (our choice)
EVERY_K_RHO_CAP = {"resnet": None, "vit": 0.6, "mixer": 0.6}
# LookSAM-5: the period of LookSAM's ImageNet ViT rows (Liu et al., CVPR 2022)
LOOK_K = 5


def variant_values(model: str, variant: str) -> list[tuple[str, object, str]]:
    """(sam key, value, source or choice) of ``variant`` on Table 1's ``model``: what its experiment file sets
    beyond configs/sam/<variant>.yaml and configs/method/<variant>.yaml."""
    row, (rho, source) = TABLE4[model], sam_rho(model)
    if variant == "every_k":
        cap, scaled = EVERY_K_RHO_CAP[row.family], round(EVERY_K * rho, 6)
        if cap is None or scaled <= cap:
            return [("rho_max", scaled, f"Composer's rule: {EVERY_K} x the SAM row's rho ({rho})")]
        return [("rho_max", cap, f"Composer's {EVERY_K} x the SAM row's rho ({scaled}) held to the top of Sec. 6.1's "
                                 "rho search (our choice, method/every_k.yaml)")]
    if variant == "looksam":
        return [("rho_max", rho, f"the SAM row's rho ({source})")]
    if variant == "lookgsam":
        return [("rho_max", row.rho_max, "Table 4's row"), ("rho_min", row.rho_min, "Table 4's row"),
                ("gsam_alpha", row.alpha, "Table 4's alpha")]
    if variant == "mesa":
        return [("start_step", 6 * STEPS_PER_EPOCH,
                 f"the official --kl_start_epoch 5 (KL from epoch 6): 6 x {STEPS_PER_EPOCH} steps at batch {BATCH}")]
    raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
