"""Evaluate a checkpoint on the configured evaluation sets:
``python evaluate.py +experiment=vit_b32_gsam data.betons=/data/betons [eval.checkpoint=PATH]``.

Uses the same config as training (model, data, amp) and builds the parts as training does
(``gsam.run.score.score_checkpoint``); under torchrun every image is counted once. ``eval.checkpoint`` may also be a
released ViT or Mixer ``.npz`` (gs://vit_models, gs://mixer_models; docs/released.md), scored as the row's model.
"""
import sys

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def main(cfg: DictConfig) -> None:
    from gsam.state.checkpoint import CheckpointError
    from gsam.config.checks import ConfigError
    from gsam.run.score import score_checkpoint

    try:
        score_checkpoint(cfg)
    except (ConfigError, CheckpointError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    from gsam.failsafe import run_main

    run_main(main)  # an exit that no loader worker or thread can hold up (gsam/failsafe.py)
