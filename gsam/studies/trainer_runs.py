"""Fig. 9 from the trainer's own logs: runs of one shipped experiment that differ only in ``sam.alpha``
(and the seed), and the per-step surrogate gap every sharpness-aware step writes to ``metrics.jsonl``.

This is how the paper's Fig. 9 is measured: h = f_p - f (Eq. 4) on each training minibatch, at the
scheduled rho_t, as training goes, not a separate evaluation. The minibatch value is noisy, so it is
summarised per epoch and over windows of the run (gsam/studies/stats.py).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig

from gsam.config.keys import CONFIGS
from gsam.runlog import read_metrics


def compose_experiment(experiment: str, overrides: Sequence[str] = (), config_dir: Path = CONFIGS) -> DictConfig:
    """The trainer's config for ``+experiment=<experiment>`` plus ``overrides``, composed as train.py does."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return compose(config_name="config", overrides=[f"+experiment={experiment}", *overrides])


def run_dir(out: Path, seed: int, alpha: float) -> Path:
    return Path(out) / f"seed{seed}_alpha{alpha:g}"


def train_alpha_runs(experiment: str, out: str | Path, alphas: Sequence[float], seeds: Sequence[int],
                     overrides: Sequence[str] = (), config_dir: Path = CONFIGS) -> dict[tuple[int, float], Path]:
    """Train ``experiment`` once per (seed, alpha) into ``<out>/seed<s>_alpha<a>``; a finished run
    (its ``results.json`` exists) is reused, an interrupted one resumes from its checkpoint."""
    from gsam.run.experiment import run

    dirs = {}
    for seed in seeds:
        for alpha in alphas:
            d = run_dir(Path(out), seed, alpha)
            if not (d / "results.json").exists():
                run(compose_experiment(experiment, [*overrides, f"sam.alpha={alpha}", f"seed={seed}",
                                                    f"output_dir={d}"], config_dir))
            dirs[(seed, alpha)] = d
    return dirs


def _flat_config(cfg, prefix: str = "") -> dict:
    out = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        out.update(_flat_config(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def find_alpha_runs(dirs: Sequence[str | Path]) -> dict[tuple[int, float], Path]:
    """Existing trainer run folders (e.g. a Slurm sweep over ``sam.alpha``), keyed by (seed, alpha)
    from each folder's ``config.yaml``. They must be one experiment: every setting other than
    ``sam.alpha``, ``seed``, the folder, the name, and what cannot change the numbers (logging, the
    progress bar, loader workers) has to agree, or the comparison means nothing."""
    from omegaconf import OmegaConf

    found, reference = {}, None
    ignored = {"sam.alpha", "seed", "output_dir", "name", "train.progress", "train.progress_every_s",
               "data.num_workers"}
    for d in map(Path, dirs):
        path = d / "config.yaml"
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: is {d} a trainer run folder?")
        cfg = _flat_config(OmegaConf.to_container(OmegaConf.load(path), resolve=False))
        if "sam.alpha" not in cfg:
            raise ValueError(f"{d}: sam={cfg.get('sam.name')} has no alpha; Fig. 9 compares GSAM runs")
        key = (int(cfg["seed"]), float(cfg["sam.alpha"]))
        if key in found:
            raise ValueError(f"{d} and {found[key]} are both seed {key[0]}, alpha {key[1]}")
        settings = {k: v for k, v in cfg.items() if k not in ignored and not k.startswith(("logger.", "hydra."))}
        if reference is None:
            reference = (d, settings)
        else:
            diff = sorted(k for k in settings.keys() | reference[1].keys() if settings.get(k) != reference[1].get(k))
            if diff:
                raise ValueError(f"{d} and {reference[0]} differ in {', '.join(diff[:5])}: not one experiment")
        found[key] = d
    return found


def logged(run: str | Path, key: str = "surrogate_gap") -> tuple[list[int], list[float], list[int]]:
    """(step, value, epoch) of every logged training step of a run (the last record of a step wins,
    so a resumed run counts each step once)."""
    train = [r for r in read_metrics(run).get("train", []) if key in r]
    if not train:
        raise ValueError(f"{Path(run) / 'metrics.jsonl'} has no training records with {key!r}: was the run "
                         "sharpness-aware?")
    return [int(r["step"]) for r in train], [float(r[key]) for r in train], [int(r["epoch"]) for r in train]
