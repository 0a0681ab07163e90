"""Launch a sweep on Slurm: the whole of Table 1 (48 experiments) by default, Table 6's four ViT-B/32 runs, or a glob of
experiments.

    python scripts/sweep.py data.betons=/data/betons hydra.launcher.partition=gpu [sweep=table1]
    python scripts/sweep.py sweep=table6 data.betons=/data/betons hydra.launcher.partition=gpu   # Table 6's ablation
    python scripts/sweep.py '+experiment=glob(vit_*_gsam)' data.betons=/data/betons
    python scripts/sweep.py --dry-run ...        # check and print the command, submit nothing
    python scripts/sweep.py search=gsam_rho model=vit_b32 data.betons=/data/betons   # one search stage
    python scripts/sweep.py search=sam_rho model=resnet50 --local ...              # here, one run after another
    python scripts/sweep.py search=gsam_alpha model=vit_b32 grid=0.4,0.6,0.8 ...    # part of a stage's grid
    python scripts/select_best.py multirun/search_gsam_rho_vit_b32/*/              # the best point, by minival

The GSAM paper's searches (Sec. 6.1, App. B.1), one stage per command, each on minival (data.val_split=minival):
``search=`` vanilla_lr_wd (lr x wd of vanilla), sam_rho and gsam_rho (rho_max), gsam_alpha, then gsam_rho_min (which
App. B.1 never searches, though Table 4 sets it). A later stage takes the earlier winners as ordinary overrides
(``optimizer.lr=3e-3 optimizer.weight_decay=0.3``). Every grid contains App. B.1's points and every Table 4 value of
its family with a point beyond it (GRIDS below gives each grid's source); ``grid=v1,v2,...`` runs part of a one-key
stage's grid. ``--local`` runs the grid here with Hydra's basic launcher instead of Slurm.

Checks the Slurm launcher's settings (configs/hydra/launcher/slurm.yaml, configs/local/slurm.yaml, the
command line) with one-line errors, then runs ``train.py -m +cluster=slurm ...``, which submits one Slurm
array job (one element per experiment) and waits for the results. Any other Hydra override passes through.
Hydra checks launcher settings only when it submits (a missing partition becomes a cryptic sbatch error), and
it instantiates launchers only from the ``hydra_plugins`` package, hence this front door.
"""
from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gsam.evaluation.tables import FAMILY_RECIPES, table1_experiments, table6_experiments  # noqa: E402

# Table 1's 48 experiments by name (gsam/evaluation/tables.py): the demo's, the study's and the efficient variants'
# files in configs/experiment/ are not rows of it; Table 6's four ViT-B/32 runs (App. C.2) are a sweep of their own
TABLE1 = "+experiment=" + ",".join(table1_experiments())
TABLE6 = "+experiment=" + ",".join(table6_experiments())
EXPERIMENT_SETS = {"table1": TABLE1, "table6": TABLE6}  # sweep=NAME without +experiment= runs that set


class SweepError(ValueError):
    pass


def _steps(first: float, last: float, step: float) -> tuple[str, ...]:
    """first, first + step, ..., last, as Hydra sweep values."""
    return tuple(f"{round(first + i * step, 6):g}" for i in range(int(round((last - first) / step)) + 1))


# The grids by recipe (configs/recipe/: the ViTs and the Mixers share theirs), each with its source. Each holds App.
# B.1's points, Sec. 6.1's steps, and every Table 4 value of the family with a grid point beyond it on both sides
# where a value can lie beyond (tests/test_search_grids.py checks them against gsam/evaluation/tables.py): a search
# that cannot reach the paper's answers, or finds its optimum at a grid's edge, cannot tell where SAM's or GSAM's
# best lies.
GRIDS = {
    "vit": {
        # App. B.1 prints {1e-3, 3e-3, 1e-2, 3e-3}, 3e-3 twice; we read the last as 3e-2 (half-decade steps)
        "lr": ("1e-3", "3e-3", "1e-2", "3e-2"),
        # App. B.1 {0.003, 0.03, 0.3}, and 1.0 so that Table 4's 0.3 is not the edge (our choice)
        "weight_decay": ("0.003", "0.03", "0.3", "1.0"),
        # SAM's rho and GSAM's rho_max: Sec. 6.1, 0.05 to 0.6 in steps of 0.05 (App. B.1 prints 0.1 to 0.6 in 0.1
        # steps), on to 0.8: Table 4's Mixer-B/32 rho_max 0.7 lies past 0.6 (our choice)
        "rho": _steps(0.05, 0.8, 0.05),
        # rho_min: not searched in App. B.1; Table 4's 0.0, 0.1, 0.2 in Sec. 6.1's 0.05 steps, to 0.3 (our choice)
        "rho_min": _steps(0.0, 0.3, 0.05),
        # App. B.1 {0.1, 0.2, 0.3}; Fig. 7b's 0.05; Table 4's 0.01 (Mixer-B/16) to 1.0 (ViT-S/16); 0 (Table 6's
        # arms without the ascent) below and 1.2 above them (our choice)
        "alpha": ("0", "0.01", "0.05", "0.1", "0.2", "0.3", "0.4", "0.6", "0.8", "1.0", "1.2"),
    },
    "resnet": {
        # App. B.1 {1.6, 0.16, 0.016}, and 3.2 so that Table 4's 1.6 is not the edge (Goyal et al. 2017's linear
        # rule at batch 8192; our choice)
        "lr": ("3.2", "1.6", "0.16", "0.016"),
        # App. B.1 {1e-3, 1e-2, 0.1}; our recipe's 1e-4 (Goyal et al. 2017, configs/optimizer/sgd.yaml) with 1e-5
        # below it; Table 4's printed 0.3, kept so that the search can show what it does as SGD's L2 (it collapses
        # the weights at lr 1.6: docs/recipe.md)
        "weight_decay": ("1e-5", "1e-4", "1e-3", "1e-2", "0.1", "0.3"),
        # Sec. 6.1 and App. B.1: 0.01 to 0.05 in steps of 0.01, and 0.06 past SAM's 0.05 (Foret et al.; our choice)
        "rho": _steps(0.01, 0.06, 0.01),
        # rho_min: not searched in App. B.1; Table 4's 0.02 in Sec. 6.1's 0.01 steps from 0 (our choice)
        "rho_min": _steps(0.0, 0.04, 0.01),
        # App. B.1 {0.01, 0.02, 0.03}; Table 4's ResNet-152 0.005, and 0 below it (our choice)
        "alpha": ("0", "0.005", "0.01", "0.02", "0.03"),
    },
}

# The stages: (method, {config key: grid}), in the order they run
SEARCHES = {
    "vanilla_lr_wd": ("vanilla", {"optimizer.lr": "lr", "optimizer.weight_decay": "weight_decay"}),
    "sam_rho": ("sam", {"sam.rho_max": "rho"}),
    "gsam_rho": ("gsam", {"sam.rho_max": "rho"}),
    "gsam_alpha": ("gsam", {"sam.alpha": "alpha"}),
    "gsam_rho_min": ("gsam", {"sam.rho_min": "rho_min"}),
}


def _composed(experiment: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        kept = [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
        return compose(config_name="config", overrides=[f"+experiment={experiment}", *kept])


def stage_grid(search: str, recipe: str, rho_min: float = 0.0, rho_max: float = float("inf")) -> dict[str, list]:
    """{config key: values} of one stage for one recipe: GSAM's rho_max grid without the points below the row's
    rho_min, its rho_min grid without those above the row's rho_max (rho_min <= rho_max)."""
    method, keys = SEARCHES[search]
    grid = {key: list(GRIDS[recipe][name]) for key, name in keys.items()}
    if method == "gsam" and "sam.rho_max" in grid:
        grid["sam.rho_max"] = [v for v in grid["sam.rho_max"] if float(v) >= rho_min]
    if "sam.rho_min" in grid:
        grid["sam.rho_min"] = [v for v in grid["sam.rho_min"] if float(v) <= rho_max]
    return grid


def _narrowed(grid: dict[str, list], search: str, part: str) -> dict[str, list]:
    """``grid=v1,v2,...``: those points of a one-key stage's grid."""
    if len(grid) != 1:
        raise SweepError(f"grid={part}: search={search} sweeps {' x '.join(grid)}; grid= narrows a one-key stage")
    (key, values), = grid.items()
    wanted = part.split(",")
    unknown = [w for w in wanted if not any(float(w) == float(v) for v in values)]
    if unknown:
        raise SweepError(f"grid={part}: {', '.join(unknown)} not in search={search}'s grid {key}={','.join(values)}")
    return {key: wanted}


def search_overrides(search: str, model: str, overrides: list[str], part: str | None = None) -> list[str]:
    """One search stage as Hydra overrides: the model's experiment of the stage's method, its grid (or the
    ``part`` of it), the selection split (minival) and a sweep name."""
    if search not in SEARCHES:
        raise SweepError(f"search={search}: expected one of {', '.join(SEARCHES)}")
    method = SEARCHES[search][0]
    experiment = f"{model}_{method}"
    if not (ROOT / "configs" / "experiment" / f"{experiment}.yaml").exists():
        raise SweepError(f"model={model}: no experiment {experiment} in configs/experiment")
    cfg = _composed(experiment, overrides)
    if cfg.model.family not in FAMILY_RECIPES:
        raise SweepError(f"model={model}: model.family={cfg.model.family} has no search grid (families: "
                         f"{', '.join(FAMILY_RECIPES)})")
    sam = cfg.get("sam", {})
    grid = stage_grid(search, FAMILY_RECIPES[cfg.model.family], float(sam.get("rho_min") or 0.0),
                      float(sam.get("rho_max") or float("inf")))
    clash = sorted(k for k in grid if any(o.lstrip("+~").startswith(k + "=") for o in overrides))
    if clash:
        raise SweepError(f"search={search} sweeps {', '.join(clash)}: leave it out of the overrides")
    if part is not None:
        grid = _narrowed(grid, search, part)
    return [f"+experiment={experiment}", "data.val_split=minival", f"sweep=search_{search}_{model}",
            *(f"{k}={','.join(v)}" for k, v in grid.items())]


def local_overrides(overrides: list[str]) -> list[str]:
    """The sweep's folders of +cluster=slurm (multirun/<sweep>/<job>_<name>), for Hydra's basic launcher."""
    sweep = next((o.split("=", 1)[1] for o in overrides if o.startswith("sweep=")), None)
    if sweep is None:
        raise SweepError("--local needs sweep=NAME (its runs go to multirun/NAME) or search=STAGE model=NAME")
    return [f"hydra.sweep.dir=multirun/{sweep}", "hydra.sweep.subdir=${hydra.job.num}_${name}",
            "output_dir=${hydra:runtime.output_dir}", *[o for o in overrides if not o.startswith("sweep=")]]


def launcher_config(overrides: list[str], config_dir: Path = ROOT / "configs"):
    """The launcher's settings as the sweep will see them (sweep values are irrelevant here and left out)."""
    from hydra import compose, initialize_config_dir

    keep = [o for o in overrides if o.lstrip("+~").startswith(("hydra.launcher.", "hydra/launcher"))]
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["+cluster=slurm", *keep], return_hydra_config=True)
    return cfg.hydra.launcher


def check_launcher(launcher) -> None:
    if not launcher.get("partition"):
        raise SweepError("hydra.launcher.partition is not set: pass hydra.launcher.partition=NAME (and account/qos "
                         "if your cluster needs them) or write them in configs/local/slurm.yaml (docs/cluster.md)")
    gpus, tasks = launcher.get("gpus_per_node"), launcher.get("tasks_per_node")
    if gpus and tasks != gpus:
        raise SweepError(f"hydra.launcher.tasks_per_node={tasks} but gpus_per_node={gpus}: the trainer runs one "
                         "process per GPU, set both to the same number")
    if shutil.which("sbatch") is None:
        raise SweepError("sbatch not found: run the sweep on a Slurm login node (or add --local, or run "
                         "`python train.py -m ...` without +cluster=slurm to run it here, one job after the other)")


def experiment_set(overrides: list[str]) -> list[str]:
    """The experiments a sweep without +experiment= runs: Table 6's four with sweep=table6, else Table 1's 48."""
    if any(o.lstrip("+").startswith("experiment=") for o in overrides):
        return []
    name = next((o.split("=", 1)[1] for o in overrides if o.startswith("sweep=")), "table1")
    return [EXPERIMENT_SETS.get(name, TABLE1)]


def sweep_command(overrides: list[str]) -> list[str]:
    if any(o.lstrip("+").startswith("cluster=") for o in overrides):
        raise SweepError("cluster=... is set by scripts/sweep.py itself; leave it out")
    return [sys.executable, str(ROOT / "train.py"), "-m", "+cluster=slurm", *experiment_set(overrides), *overrides]


def _pop(overrides: list[str], key: str) -> str | None:
    found = [o for o in overrides if o.startswith(key + "=")]
    for o in found:
        overrides.remove(o)
    return found[-1].split("=", 1)[1] if found else None


def main(argv: list[str]) -> int:
    dry, local = "--dry-run" in argv, "--local" in argv
    overrides = [a for a in argv if a not in ("--dry-run", "--local")]
    try:
        search, model, part = _pop(overrides, "search"), _pop(overrides, "model"), _pop(overrides, "grid")
        if search is not None:
            if model is None:
                raise SweepError(f"search={search} needs model=NAME (a Table 1 model, e.g. model=vit_b32)")
            overrides = search_overrides(search, model, overrides, part) + overrides
        elif part is not None:
            raise SweepError(f"grid={part} narrows a search stage: it needs search=STAGE model=NAME")
        elif model is not None:
            overrides.append(f"model={model}")
        if local:
            cmd = [sys.executable, str(ROOT / "train.py"), "-m", *local_overrides(experiment_set(overrides)
                                                                                  + overrides)]
        else:
            cmd = sweep_command(overrides)
            check_launcher(launcher_config(overrides))
    except SweepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(" ".join(shlex.quote(c) for c in cmd), flush=True)
    if dry:
        return 0
    return subprocess.run(cmd).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
