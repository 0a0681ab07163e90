"""Run under torchrun by test_eval_sets.py: every evaluator on the mixed fixture, on this rank's shard.

Everything is imported before the process group starts: torchvision (imported by gsam.data.folder; it imports
torch._dynamo), imported while a process group exists, keeps a reference to the group, so destroy_process_group
leaves gloo's worker and transport threads running, and they are torn down during interpreter finalization, where a thread still
holding a collective's tensors aborts the process ("terminate called without an active exception"). So the
worker checks that destroy_process_group really ended gloo's threads: a reference kept anywhere fails every
run, not one run in many."""
import json
import os
import sys
from pathlib import Path

import torch.distributed as dist

from support.evalsets import evaluate_all


def gloo_threads() -> list[str]:
    """The names of this process's native threads that belong to gloo (Linux names them in /proc)."""
    tasks = Path("/proc/self/task")
    names = [(tasks / t / "comm").read_text().strip() for t in os.listdir(tasks)] if tasks.is_dir() else []
    return [n for n in names if "gloo" in n]


if __name__ == "__main__":
    dist.init_process_group("gloo")
    settings = json.loads(Path(sys.argv[1]).read_text())
    results = evaluate_all(settings, dist.get_rank(), dist.get_world_size())
    if dist.get_rank() == 0:
        Path(sys.argv[2]).write_text(json.dumps(results))
    dist.barrier()  # neither rank tears gloo down while the other may still use it
    dist.destroy_process_group()
    left = gloo_threads()
    if left:
        sys.exit(f"rank {os.environ['RANK']}: gloo threads still running after destroy_process_group: {left}")
