"""Run under ``torchrun --nproc_per_node=2`` by test_trainer.py: train.py itself (its Hydra main, the given
overrides), with DDP's gradient synchronisations counted by a comm hook on the DDP model the run builds (DDP's
default all-reduce, counted). Writes the count to COUNT_FILE with {rank} replaced by the process's rank.

    torchrun ... tests/train_ddp_worker.py COUNT_FILE override ...
"""
import json
import os
import runpy
import sys
from pathlib import Path

import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from support import ROOT


def count_gradient_syncs(counts: dict) -> None:
    """Every DistributedDataParallel built from now on calls ``counts["buckets"] += 1`` per bucket it all-reduces."""
    init = DistributedDataParallel.__init__

    def counted_init(self, *args, **kwargs):
        init(self, *args, **kwargs)

        def hook(state, bucket):
            counts["buckets"] += 1
            fut = dist.all_reduce(bucket.buffer().div_(dist.get_world_size()), async_op=True).get_future()
            return fut.then(lambda f: f.value()[0])

        self.register_comm_hook(None, hook)

    DistributedDataParallel.__init__ = counted_init


if __name__ == "__main__":
    count_file, overrides = sys.argv[1], sys.argv[2:]
    counts = {"buckets": 0}
    count_gradient_syncs(counts)
    sys.argv = [str(ROOT / "train.py"), *overrides]
    try:
        runpy.run_path(str(ROOT / "train.py"), run_name="__main__")
    finally:
        Path(count_file.format(rank=os.environ["RANK"])).write_text(json.dumps(counts))
