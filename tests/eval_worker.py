"""Run under torchrun by test_eval_sets.py: every evaluator on the mixed fixture, on this rank's shard."""
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).parent))
from evalsets import CLASSES, CodeModel, mixed_table  # noqa: E402


def evaluate_all(settings: dict, rank: int, world: int) -> dict:
    from gsam.data.folder import eval_loader, eval_transform
    from gsam.eval_sets import build_eval_sets

    cfg = OmegaConf.create({"data": {"img_size": 8, "eval_batch_size": 2, "num_workers": 0, "crop_pct": 1.0},
                            "eval": {k: settings[k] for k in ("real_labels", "v2", "r", "c")} | {"c_corruptions": None}})
    samples = [tuple(s) for s in settings["val"]]
    val = eval_loader(samples, eval_transform(8, (0.0,) * 3, (1.0,) * 3, 1.0), batch=2, num_workers=0, rank=rank,
                      world=world)
    evs = build_eval_sets(cfg, classes=CLASSES, loaders={"val": val}, files={"val": [p for p, _ in samples]},
                          loss_fn=torch.nn.functional.cross_entropy, mean=(0.0,) * 3, std=(1.0,) * 3, rank=rank,
                          world=world, notice=lambda *_: None)
    model = CodeModel(mixed_table())
    return {name: ev(model, torch.device("cpu"), None) for name, ev in evs.items()}


if __name__ == "__main__":
    dist.init_process_group("gloo")
    settings = json.loads(Path(sys.argv[1]).read_text())
    results = evaluate_all(settings, dist.get_rank(), dist.get_world_size())
    if dist.get_rank() == 0:
        Path(sys.argv[2]).write_text(json.dumps(results))
    dist.barrier()  # neither rank tears gloo down while the other may still use it (rank 0 aborted at teardown in 1 run of 4 without it)
    dist.destroy_process_group()
