"""Run under ``torchrun --nproc_per_node=2`` (gloo, CPU) by test_analysis_ddp.py: each rank measures on
its half of a fixed set of batches and saves the numbers into OUT/rank{r}.pt."""
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from gsam import analysis  # noqa: E402
from helpers import batch, mlp  # noqa: E402


def setup():
    """The model (BN with running statistics set by one train-mode pass) and the 4 batches."""
    model = mlp(seed=0, bn=True)
    x, y = batch(seed=1, n=64)
    model.train()
    model(x)
    return model, list(zip(x.split(16), y.split(16)))


def measure(model, batches):
    eig = analysis.dominant_eigenvalue(model, F.cross_entropy, batches, iters=40, tol=0.0, seed=3)
    gaps = analysis.surrogate_gaps(model, F.cross_entropy, batches, [0.05, 0.2])
    d = analysis.gradient_direction(model, F.cross_entropy, batches)
    line = analysis.loss_slice_1d(model, F.cross_entropy, batches, d, [-0.5, 0.0, 0.5])
    return {"eigenvalue": eig.eigenvalue, "iterations": eig.iterations, "gaps": [g.as_dict() for g in gaps],
            "slice": line}


def main(out: Path) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model, batches = setup()
    torch.save(measure(model, batches[rank::world]), out / f"rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
