"""Run under torchrun by test_eval_sets.py: every evaluator on the mixed fixture, on this rank's shard."""
import json
import sys
from pathlib import Path

import torch.distributed as dist

from support.evalsets import evaluate_all


if __name__ == "__main__":
    dist.init_process_group("gloo")
    settings = json.loads(Path(sys.argv[1]).read_text())
    results = evaluate_all(settings, dist.get_rank(), dist.get_world_size())
    if dist.get_rank() == 0:
        Path(sys.argv[2]).write_text(json.dumps(results))
    dist.barrier()  # neither rank tears gloo down while the other may still use it (rank 0 aborted at teardown in 1 run of 4 without it)
    dist.destroy_process_group()
