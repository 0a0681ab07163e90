"""Launch a sweep on Slurm: the whole of Table 1 (48 experiments) by default, or a glob of experiments.

    python scripts/sweep.py data.betons=/data/betons hydra.launcher.partition=gpu [sweep=table1]
    python scripts/sweep.py '+experiment=glob(vit_*_gsam)' data.betons=/data/betons
    python scripts/sweep.py --dry-run ...        # check and print the command, submit nothing

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

from gsam.table1 import SMALL_MODEL_PREFIXES  # noqa: E402

# every experiment but the small CPU ones (the demo's and the study's, named with their models' prefixes)
TABLE1 = f"+experiment=glob(*,exclude=[{','.join(p + '*' for p in SMALL_MODEL_PREFIXES)}])"


class SweepError(ValueError):
    pass


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
        raise SweepError("sbatch not found: run the sweep on a Slurm login node (or `python train.py -m ...` "
                         "without +cluster=slurm to run it here, one job after the other)")


def sweep_command(overrides: list[str]) -> list[str]:
    if any(o.lstrip("+").startswith("cluster=") for o in overrides):
        raise SweepError("cluster=... is set by scripts/sweep.py itself; leave it out")
    experiments = [] if any(o.lstrip("+").startswith("experiment=") for o in overrides) else [TABLE1]
    return [sys.executable, str(ROOT / "train.py"), "-m", "+cluster=slurm", *experiments, *overrides]


def main(argv: list[str]) -> int:
    dry = "--dry-run" in argv
    overrides = [a for a in argv if a != "--dry-run"]
    try:
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
