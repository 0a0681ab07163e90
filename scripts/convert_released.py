"""A released ViT or MLP-Mixer checkpoint (.npz of gs://vit_models/{sam,gsam}, gs://mixer_models/{sam,gsam}) written
as one of our checkpoints (gsam/state/checkpoint.py's format: ``model``, ``loop``, ``config``, and ``released``):

    python scripts/convert_released.py ViT-B_32.npz --experiment vit_b32_gsam --out vit_b32_gsam_released.pt

``config`` is the row's composed config (any ``key=value`` after the options overrides it) with the released
architecture (pooling, activation: gsam/state/released.py), so evaluate.py (``eval.checkpoint=``, the same row) and
the analysis scripts' ``--checkpoint`` build the same model. A file that does not fill the row's model exactly is
refused in one line (exit 2) and nothing is written. It holds no optimizer state and no training position (loop
step 0): train.py refuses to resume it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def compose_row(experiment: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose(config_name="config", overrides=[f"+experiment={experiment}", *overrides])


def convert(npz_path: Path, experiment: str, out: Path, overrides: list[str] = ()) -> dict:
    """Write ``npz_path`` as our checkpoint ``out`` (the model is ``experiment``'s, made the released one); returns
    what was written."""
    from omegaconf import OmegaConf

    from gsam.run.score import check_released_model, released_model
    from gsam.state import released
    from gsam.state.checkpoint import atomic_save

    cfg = compose_row(experiment, list(overrides))
    npz = released.read(npz_path)
    file = released_model(cfg, npz_path, npz, {})
    model = check_released_model(cfg, npz_path, npz)
    released.load_into(model, npz)
    state = {"model": {k: v.detach().clone() for k, v in model.state_dict().items()},
             "loop": {"step": 0, "epoch": 0, "batch_in_epoch": 0},  # a released file holds no training position
             "config": OmegaConf.to_container(cfg, resolve=True),
             "released": {"file": file, "family": npz.family, "model_kwargs": npz.model_kwargs}}
    atomic_save(state, out)
    return state


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("npz", type=Path, help="the released .npz file")
    ap.add_argument("--experiment", required=True, help="the Table 1 row, e.g. vit_b32_gsam (configs/experiment/)")
    ap.add_argument("--out", type=Path, required=True, help="the checkpoint to write (.pt)")
    ap.add_argument("overrides", nargs="*", help="config overrides, key=value")
    args = ap.parse_intermixed_args(argv)
    from hydra.errors import HydraException

    from gsam.state.checkpoint import CheckpointError

    try:
        convert(args.npz, args.experiment, args.out, args.overrides)
    except (CheckpointError, HydraException, ValueError, TypeError) as e:
        print(f"error: {str(e).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    print(f"{args.out}: {args.npz} as {args.experiment}'s model (released)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
