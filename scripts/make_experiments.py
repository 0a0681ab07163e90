"""Writes configs/experiment/{model}_{method}.yaml for the 48 rows of the GSAM paper's Table 1.

The numbers come from Table 4 (GSAM rows) and the choices documented below; rerun after editing
this table. The files are committed; tests/test_configs.py checks them against its own transcription.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gsam.table1 import TABLE1_METHODS, sam_name, table1_models  # noqa: E402

# model: (family, rho_max, rho_min, alpha) -- GSAM paper Table 4
TABLE4 = {
    "resnet50": ("resnet", 0.04, 0.02, 0.01),
    "resnet101": ("resnet", 0.04, 0.02, 0.01),
    "resnet152": ("resnet", 0.04, 0.02, 0.005),  # printed "ResNet512": the third ResNet row
    "vit_s32": ("vit", 0.6, 0.0, 0.4),
    "vit_s16": ("vit", 0.6, 0.0, 1.0),
    "vit_b32": ("vit", 0.6, 0.1, 0.6),
    "vit_b16": ("vit", 0.6, 0.2, 0.4),
    "mixer_s32": ("mixer", 0.5, 0.0, 0.2),
    "mixer_s16": ("mixer", 0.5, 0.0, 0.6),
    "mixer_s8": ("mixer", 0.5, 0.1, 0.1),
    "mixer_b32": ("mixer", 0.7, 0.2, 0.05),
    "mixer_b16": ("mixer", 0.5, 0.2, 0.01),
}
# sam.m of every SAM-family experiment, with its derivation: the same perturbation group on any hardware
M_LINES = ["  # m: images per perturbation group. The paper's runs: batch 4096 on \"8x8 TPU cores\" (big_vision",
           "  # PR #8), each core perturbing with its own slice (per-device gsam_gradient, then pmean), so",
           "  # m = 4096 / 64 cores = 64. If \"8x8\" means 64 chips of 2 cores each, m = 4096 / 128 = 32.",
           "  m: 64"]

HEADER = "# @package _global_\n"


def sam_rho(model: str) -> tuple[float, str]:
    family, rho_max, _, _ = TABLE4[model]
    if family == "resnet":
        return 0.05, ("rho 0.05: the SAM paper's ImageNet ResNet value (Foret et al. 2021), the top of the GSAM\n"
                      "# paper's ResNet grid 0.01-0.05 (App. B.1)")
    return rho_max, ("rho = this row's GSAM rho_max, held constant: big_vision's GSAM config reduces to SAM with\n"
                     "# rho_max = rho_min and alpha = 0, and the value is on the GSAM paper's SAM grid 0.1-0.6\n"
                     "# (App. B.1). Chen et al. 2021's per-model SAM rho (whose accuracies Table 1 copies) could\n"
                     "# not be verified, so they are not used")


def experiment(model: str, method: str) -> str:
    family, rho_max, rho_min, alpha = TABLE4[model]
    vit_like = family != "resnet"
    title = {"vanilla": "vanilla", "sam": "SAM", "gsam": "GSAM", "xsam": "XSAM"}[method]
    lines = [HEADER + f"# {model} + {title}: GSAM paper Table 1 row; lr, weight decay and schedule of Table 4"
             + (" (AdamW, 300 epochs, 10k warm-up)" if vit_like else " (SGD, 90 epochs, 5k warm-up)") + ".",
             "defaults:", f"  - override /model: {model}"]
    if vit_like:
        lines += ["  - override /optimizer: adamw", "  - override /schedule: vit"]
    lines += [f"  - override /sam: {sam_name(method)}", "", f"name: {model}_{method}"]
    if method == "gsam":
        lines += ["sam:  # Table 4", f"  rho_max: {rho_max}", f"  rho_min: {rho_min}", f"  alpha: {alpha}"]
    elif method == "sam":
        rho, why = sam_rho(model)
        lines += [f"# {why}.", "sam:", f"  rho_max: {rho}"]
    elif method == "xsam":
        rho, _ = sam_rho(model)
        lines += ["# XSAM has no ImageNet recipe (the official code is CIFAR-only): rho = this row's SAM rho,",
                  "# rho_probe = 2 rho and k = 1 as in the official README (rho 0.15, rho_max 0.3), alpha* searched",
                  "# at the first step of every epoch as the official --is_dynamic does (batch_idx == 1), on one",
                  "# perturbation group of m images (docs/optimizers.md).",
                  "sam:", f"  rho_max: {rho}", f"  rho_probe: {round(2 * rho, 6)}", "  steps: 1",
                  "  search_every_epochs: 1"]
    if method != "vanilla":
        lines += M_LINES
    return "\n".join(lines) + "\n"


def main() -> None:
    out = Path(__file__).resolve().parent.parent / "configs" / "experiment"
    models = table1_models()
    if sorted(TABLE4) != models:  # configs/model/*.yaml names the models; each needs its Table 4 row
        sys.exit(f"make_experiments: TABLE4 rows {sorted(TABLE4)} are not the models of configs/model/ {models}")
    out.mkdir(parents=True, exist_ok=True)
    for model in models:
        for method in TABLE1_METHODS:
            (out / f"{model}_{method}.yaml").write_text(experiment(model, method))
    print(f"wrote {len(TABLE1_METHODS) * len(models)} experiments to {out}")


if __name__ == "__main__":
    main()
