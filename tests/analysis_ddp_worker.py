"""Run under ``torchrun --nproc_per_node=2`` (gloo, CPU) by test_analysis_ddp.py: each rank measures on
its half of a fixed set of batches and saves the numbers into OUT/rank{r}.pt."""
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from support.analysis_case import measure, setup


def main(out: Path) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model, batches = setup()
    torch.save(measure(model, batches[rank::world]), out / f"rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
