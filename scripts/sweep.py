"""Launch a sweep on Slurm: the whole of Table 1 (48 experiments) by default, or a glob of experiments.

    python scripts/sweep.py data.betons=/data/betons hydra.launcher.partition=gpu [sweep=table1]
    python scripts/sweep.py '+experiment=glob(vit_*_gsam)' data.betons=/data/betons
    python scripts/sweep.py --dry-run ...        # check and print the command, submit nothing
    python scripts/sweep.py search=gsam_rho model=vit_b32 data.betons=/data/betons   # one stage of App. B.1
    python scripts/sweep.py search=sam_rho model=resnet50 --local ...              # here, one run after another
    python scripts/select_best.py multirun/search_gsam_rho_vit_b32/*/              # the best point, by minival

The GSAM paper's searches (App. B.1), one stage per command, each on minival (data.val_split=minival): ``search=``
vanilla_lr_wd (lr x wd of vanilla), sam_rho and gsam_rho (rho_max), then gsam_alpha. A later stage takes the
earlier winners as ordinary overrides (``optimizer.lr=3e-3 optimizer.weight_decay=0.3``). ``--local`` runs the
grid here with Hydra's basic launcher instead of Slurm.

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

from gsam.evaluation.tables import FAMILY_RECIPES, table1_experiments  # noqa: E402

# Table 1's 48 experiments by name (gsam/evaluation/tables.py): the demo's, the study's and the efficient variants'
# files in configs/experiment/ are not rows of it
TABLE1 = "+experiment=" + ",".join(table1_experiments())


class SweepError(ValueError):
    pass


# App. B.1's grids, by recipe (configs/recipe/: the ViTs and the Mixers share theirs): (method, {key: values})
_VIT_RHO, _RESNET_RHO = "0.1,0.2,0.3,0.4,0.5,0.6", "0.01,0.02,0.03,0.04,0.05"
SEARCHES = {
    # lr: App. B.1 prints {1e-3, 3e-3, 1e-2, 3e-3}, 3e-3 twice; we read the last as 3e-2 (half-decade steps)
    "vanilla_lr_wd": ("vanilla", {
        "vit": {"optimizer.lr": "1e-3,3e-3,1e-2,3e-2", "optimizer.weight_decay": "0.003,0.03,0.3"},
        "resnet": {"optimizer.lr": "1.6,0.16,0.016", "optimizer.weight_decay": "0.001,0.01,0.1"}}),
    "sam_rho": ("sam", {"vit": {"sam.rho_max": _VIT_RHO}, "resnet": {"sam.rho_max": _RESNET_RHO}}),
    "gsam_rho": ("gsam", {"vit": {"sam.rho_max": _VIT_RHO}, "resnet": {"sam.rho_max": _RESNET_RHO}}),
    "gsam_alpha": ("gsam", {"vit": {"sam.alpha": "0.1,0.2,0.3"}, "resnet": {"sam.alpha": "0.01,0.02,0.03"}}),
}


def _composed(experiment: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        kept = [o for o in overrides if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
        return compose(config_name="config", overrides=[f"+experiment={experiment}", *kept])


def search_overrides(search: str, model: str, overrides: list[str]) -> list[str]:
    """One stage of App. B.1 as Hydra overrides: the model's experiment of the stage's method, its grid, the
    selection split (minival) and a sweep name. GSAM's rho_max grid keeps the row's rho_min (Table 4) and drops
    the points below it (rho_min <= rho_max)."""
    if search not in SEARCHES:
        raise SweepError(f"search={search}: expected one of {', '.join(SEARCHES)}")
    method, grids = SEARCHES[search]
    experiment = f"{model}_{method}"
    if not (ROOT / "configs" / "experiment" / f"{experiment}.yaml").exists():
        raise SweepError(f"model={model}: no experiment {experiment} in configs/experiment")
    cfg = _composed(experiment, overrides)
    if cfg.model.family not in FAMILY_RECIPES:
        raise SweepError(f"model={model}: model.family={cfg.model.family} has no App. B.1 grid (families: "
                         f"{', '.join(FAMILY_RECIPES)})")
    grid = dict(grids[FAMILY_RECIPES[cfg.model.family]])
    clash = sorted(k for k in grid if any(o.lstrip("+~").startswith(k + "=") for o in overrides))
    if clash:
        raise SweepError(f"search={search} sweeps {', '.join(clash)}: leave it out of the overrides")
    if method == "gsam" and "sam.rho_max" in grid:
        rho_min = float(cfg.sam.rho_min)
        grid["sam.rho_max"] = ",".join(v for v in grid["sam.rho_max"].split(",") if float(v) >= rho_min)
    return [f"+experiment={experiment}", "data.val_split=minival", f"sweep=search_{search}_{model}",
            *(f"{k}={v}" for k, v in grid.items())]


def local_overrides(overrides: list[str]) -> list[str]:
    """The sweep's folders of +cluster=slurm (multirun/<sweep>/<job>_<name>), for Hydra's basic launcher."""
    sweep = next(o.split("=", 1)[1] for o in overrides if o.startswith("sweep="))
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


def sweep_command(overrides: list[str]) -> list[str]:
    if any(o.lstrip("+").startswith("cluster=") for o in overrides):
        raise SweepError("cluster=... is set by scripts/sweep.py itself; leave it out")
    experiments = [] if any(o.lstrip("+").startswith("experiment=") for o in overrides) else [TABLE1]
    return [sys.executable, str(ROOT / "train.py"), "-m", "+cluster=slurm", *experiments, *overrides]


def _pop(overrides: list[str], key: str) -> str | None:
    found = [o for o in overrides if o.startswith(key + "=")]
    for o in found:
        overrides.remove(o)
    return found[-1].split("=", 1)[1] if found else None


def main(argv: list[str]) -> int:
    dry, local = "--dry-run" in argv, "--local" in argv
    overrides = [a for a in argv if a not in ("--dry-run", "--local")]
    try:
        search, model = _pop(overrides, "search"), _pop(overrides, "model")
        if search is not None:
            if model is None:
                raise SweepError(f"search={search} needs model=NAME (a Table 1 model, e.g. model=vit_b32)")
            overrides = search_overrides(search, model, overrides) + overrides
        elif model is not None:
            overrides.append(f"model={model}")
        if local:
            cmd = [sys.executable, str(ROOT / "train.py"), "-m", *local_overrides(overrides)]
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
