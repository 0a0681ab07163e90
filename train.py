"""Train one experiment: ``torchrun --nproc_per_node=8 train.py +experiment=vit_b32_gsam data.betons=/data/betons``.

Composes the Hydra config, then hands it to ``gsam.run.experiment.run`` (kept in the package so that the
submitit launcher can pickle it). A config error is one line naming the key, exit status 2.
"""
import sys

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from gsam.state.checkpoint import CheckpointError
    from gsam.config.checks import ConfigError
    from gsam.run.experiment import run
    from gsam.runlog import LogWriteError

    try:
        results = run(cfg)
    except (ConfigError, CheckpointError, LogWriteError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except FloatingPointError as e:  # too many non-finite steps in a row
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    key = "val" if "val" in results else next(iter(results), None)
    return results[key]["top1"] if key else None  # the value a Hydra sweeper optimises


if __name__ == "__main__":
    from gsam.failsafe import run_main

    run_main(main)  # an exit that no loader worker or thread can hold up (gsam/failsafe.py)
