"""Writes configs/experiment/{model}_{method}.yaml for the 48 rows of the GSAM paper's Table 1.

Each file is a delta: its recipe (configs/recipe/resnet.yaml or vit.yaml: optimizer and schedule of Table 4), its
method (configs/method/*.yaml: the sam group, perturbation groups, the rationale of the method's choices), its model,
and the row's own numbers below. The run's name is derived (config.yaml, method/vanilla.yaml), not written. Rerun
after editing this table. The files are committed; tests/test_configs.py checks them against its own transcription.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gsam.evaluation.table1 import TABLE1_METHODS, table1_models  # noqa: E402

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
TITLES = {"vanilla": "vanilla", "sam": "SAM", "gsam": "GSAM", "xsam": "XSAM"}


def recipe(model: str) -> str:
    """configs/recipe/<recipe>.yaml: Table 4 gives the ViTs and the Mixers one recipe."""
    return "resnet" if TABLE4[model][0] == "resnet" else "vit"


def sam_rho(model: str) -> tuple[float, str]:
    """The constant rho of the SAM and XSAM rows (a choice: Table 4 has no SAM row) and where it comes from;
    the full rationale is in configs/method/sam.yaml."""
    family, rho_max, _, _ = TABLE4[model]
    if family == "resnet":
        return 0.05, "the SAM paper's ImageNet ResNet rho"
    return rho_max, "this row's GSAM rho_max"


def experiment(model: str, method: str) -> str:
    _, rho_max, rho_min, alpha = TABLE4[model]
    lines = ["# @package _global_", f"# {model} + {TITLES[method]}: a row of the GSAM paper's Table 1.",
             "defaults:", f"  - /recipe: {recipe(model)}", f"  - /method: {method}", f"  - override /model: {model}"]
    if method == "gsam":  # Table 4's row, as printed (configs/method/gsam.yaml)
        lines += ["", "sam:", f"  rho_max: {rho_max}", f"  rho_min: {rho_min}", f"  alpha: {alpha}"]
    elif method == "sam":
        rho, source = sam_rho(model)
        lines += ["", "sam:", f"  rho_max: {rho}  # a choice (Table 4 has no SAM row): {source}, method/sam.yaml"]
    elif method == "xsam":
        rho, _ = sam_rho(model)
        # both names, next to the values: our rho_max is the official --rho, our rho_probe the official --rho_max
        values = [f"rho_max: {rho}", f"rho_probe: {round(2 * rho, 6)}"]
        width = max(map(len, values)) + 2
        lines += ["", "sam:",
                  f"  {values[0]:<{width}}# the ascent length (official --rho), a choice: the SAM row's rho",
                  f"  {values[1]:<{width}}# the probe radius (official --rho_max): 2 rho, the official README's ratio",
                  "  # (XSAM has no ImageNet recipe: configs/method/xsam.yaml)"]
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
