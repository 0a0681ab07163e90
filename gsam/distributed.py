"""Process group from torchrun or Slurm variables; device choice; per-rank seeding; the collectives the trainer
uses (defined in ``gsam.optim.comm``)."""
from __future__ import annotations

import dataclasses
import os
import random
import subprocess

import numpy as np
import torch
import torch.distributed as dist

# the collectives live with the optimizers (torch only, one implementation); the trainer takes them from here
from gsam.optim.comm import all_reduce_sum, barrier  # noqa: F401


@dataclasses.dataclass(frozen=True)
class DistInfo:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def _slurm_env() -> None:
    """Fill the torchrun variables from Slurm's when launched by ``srun`` without torchrun. The world is the
    srun step's tasks: a batch script that runs ``python train.py`` itself, without srun, sees the allocation's
    SLURM_NTASKS but is one process (waiting for the others would hang)."""
    world = int(os.environ.get("SLURM_STEP_NUM_TASKS", "1"))
    if "RANK" in os.environ or world <= 1 or "SLURM_PROCID" not in os.environ:
        return
    os.environ["RANK"] = os.environ["SLURM_PROCID"]
    os.environ["WORLD_SIZE"] = str(world)
    os.environ["LOCAL_RANK"] = os.environ.get("SLURM_LOCALID", "0")
    if "MASTER_ADDR" not in os.environ:
        nodes = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST", "localhost")
        try:
            first = subprocess.run(["scontrol", "show", "hostnames", nodes], capture_output=True, text=True,
                                   check=True).stdout.split()[0]
        except (OSError, subprocess.CalledProcessError, IndexError):
            first = nodes.split(",")[0]
        os.environ["MASTER_ADDR"] = first
    os.environ.setdefault("MASTER_PORT", str(20000 + int(os.environ.get("SLURM_JOB_ID", "0")) % 20000))


def init_distributed(device: str = "auto") -> DistInfo:
    _slurm_env()
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if use_cuda:
            torch.cuda.set_device(local_rank)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if use_cuda else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = 0, 1
    dev = torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")
    return DistInfo(rank=rank, world=world, local_rank=local_rank, device=dev)


def seed_everything(seed: int, rank: int) -> None:
    """Different streams per rank (dropout, stochastic depth), reproducible per run."""
    s = seed * 1000 + rank
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)


def rng_state() -> dict:
    """Every generator's state as tensors and plain containers, so that a checkpoint loads with
    ``torch.load(weights_only=True)`` (numpy's own state holds an ndarray, which that refuses)."""
    kind, key, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [kind, key.tolist(), pos, has_gauss, gauss],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))  # a checkpoint may give the tuple back as a list
    kind, key, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(key, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def raise_on_every_rank(error: Exception | None, device: torch.device, elsewhere: Exception) -> None:
    """Raise on every rank when any rank failed (usually rank 0, the one that writes or locks): an all-reduce of
    the flag, so that no rank goes on alone or waits forever. ``elsewhere``: what a rank without the error raises."""
    if all_reduce_sum(torch.tensor([float(error is not None)], device=device)).item() > 0:
        raise error or elsewhere
