"""Writes configs/experiment/{model}_{method}.yaml: the 48 rows of the GSAM paper's Table 1, beside them one
experiment per efficient variant (every_k, looksam, lookgsam, mesa) on each Table 1 model, and the four ViT-B/32 runs
of Table 6's ablation (vit_b32_table6_{const_rho,const_rho_ascent,decayed_rho,decayed_rho_ascent}).

    python scripts/dev/make_experiments.py                    # into this repository's configs/
    python scripts/dev/make_experiments.py --configs DIR      # into another copy of configs/

Each file is a delta: its recipe (configs/recipe/resnet.yaml or vit.yaml: optimizer and schedule of Table 4), its
method (configs/method/*.yaml: the sam group, perturbation groups, the rationale of the method's choices), its model,
and the row's own numbers below. The models, their recipes and their numbers are data in gsam/evaluation/tables.py;
rerun after editing them. The run's name is derived (config.yaml, method/vanilla.yaml), not written. The files are
committed; tests/test_configs.py checks them against its own transcription of Table 4.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gsam.evaluation.tables import (TABLE1_METHODS, TABLE1_MODELS, TABLE4, TABLE6_ARMS, TABLE6_MODEL,  # noqa: E402
                                    TABLE6_PAPER, TABLE6_TITLES, VARIANTS, sam_rho, table6_values, variant_values)

TITLES = {"vanilla": "vanilla", "sam": "SAM", "gsam": "GSAM", "xsam": "XSAM", "every_k": "SAM every k steps",
          "looksam": "LookSAM", "lookgsam": "LookGSAM (ours)", "mesa": "MESA"}
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _commented(values: list[tuple[str, object, str]]) -> list[str]:
    """``  key: value  # comment`` lines, the comments aligned."""
    cells = [f"{key}: {value}" for key, value, _ in values]
    width = max(map(len, cells)) + 2
    return [f"  {cell:<{width}}# {comment}" for cell, (_, _, comment) in zip(cells, values)]


def _table1_values(model: str, method: str) -> list[str]:
    row = TABLE4[model]
    if method == "gsam":  # Table 4's row, as printed (configs/method/gsam.yaml)
        return [f"  rho_max: {row.rho_max}", f"  rho_min: {row.rho_min}", f"  alpha: {row.alpha}"]
    rho, source = sam_rho(model)
    if method == "sam":
        return [f"  rho_max: {rho}  # {source}, method/sam.yaml"]
    if method == "xsam":
        # both names, next to the values: our rho_max is the official --rho, our rho_probe the official --rho_max
        return _commented([("rho_max", rho, "the ascent length (official --rho), a choice: the SAM row's rho"),
                           ("rho_probe", round(2 * rho, 6),
                            "the probe radius (official --rho_max): 2 rho, the official README's ratio")]) + [
            "  # (XSAM has no ImageNet recipe: configs/method/xsam.yaml)"]
    return []


def experiment(model: str, method: str) -> str:
    """The file of ``method`` (a Table 1 method or an efficient variant) on the Table 1 ``model``."""
    what = ("a row of the GSAM paper's Table 1." if method in TABLE1_METHODS else
            f"an efficient variant beside Table 1, not a row of it (configs/method/{method}.yaml).")
    lines = ["# @package _global_", f"# {model} + {TITLES[method]}: {what}",
             "defaults:", f"  - /recipe: {TABLE4[model].recipe}", f"  - /method: {method}",
             f"  - override /model: {model}"]
    values = _table1_values(model, method) if method in TABLE1_METHODS else _commented(variant_values(model, method))
    if values:
        lines += ["", "sam:", *values]
    return "\n".join(lines) + "\n"


def table6_experiment(arm: str) -> str:
    """The file of one arm of Table 6's ViT-B/32 ablation (App. C.2). Its name is written: the derived
    ``<model>_<sam.name>`` would be a Table 1 row's folder (vit_b32_sam, vit_b32_gsam for three arms)."""
    method, values = table6_values(arm)
    lines = ["# @package _global_",
             f"# {TABLE6_MODEL} + {TABLE6_TITLES[arm]}: an arm of the GSAM paper's Table 6 (the paper: "
             f"{TABLE6_PAPER[arm]}), not a row of Table 1.",
             "# Table 1's recipe; scripts/sweep.py sweep=table6 runs the four arms, make_table.py lays them out.",
             "defaults:", f"  - /recipe: {TABLE4[TABLE6_MODEL].recipe}", f"  - /method: {method}",
             f"  - override /model: {TABLE6_MODEL}", "", f"name: ${{model.short}}_table6_{arm}", "",
             "sam:", *_commented(values)]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", type=Path, default=CONFIGS, help="the configs/ folder to write into")
    args = ap.parse_args(argv)
    missing = [m for m in TABLE1_MODELS if not (args.configs / "model" / f"{m}.yaml").is_file()]
    if missing:  # a Table 1 model needs its model file; other model files are no concern of this script
        print(f"error: {args.configs / 'model'}: no file for the Table 1 models {missing} "
              "(gsam/evaluation/tables.py lists them)", file=sys.stderr)
        return 2
    out = args.configs / "experiment"
    out.mkdir(parents=True, exist_ok=True)
    methods = TABLE1_METHODS + VARIANTS
    for model in TABLE1_MODELS:
        for method in methods:
            (out / f"{model}_{method}.yaml").write_text(experiment(model, method))
    for arm in TABLE6_ARMS:
        (out / f"{TABLE6_MODEL}_table6_{arm}.yaml").write_text(table6_experiment(arm))
    print(f"wrote {len(methods) * len(TABLE1_MODELS)} experiments to {out} ({len(TABLE1_METHODS) * len(TABLE1_MODELS)} "
          f"of Table 1, {len(VARIANTS) * len(TABLE1_MODELS)} efficient variants), and the {len(TABLE6_ARMS)} of "
          "Table 6's ablation")
    return 0


if __name__ == "__main__":
    sys.exit(main())
