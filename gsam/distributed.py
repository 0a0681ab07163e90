"""Process group from torchrun or Slurm variables; device choice; per-rank seeding; the collectives the trainer
uses (defined in ``gsam.optim.comm``)."""
from __future__ import annotations

import dataclasses
import os
import random
import socket
import subprocess
import threading
import time
from datetime import timedelta

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


def _slurm_env() -> bool:
    """Fill the torchrun variables from Slurm's when launched by ``srun`` without torchrun (True when it did).
    The world is the srun step's tasks: a batch script that runs ``python train.py`` itself, without srun, sees
    the allocation's SLURM_NTASKS but is one process (waiting for the others would hang)."""
    world = int(os.environ.get("SLURM_STEP_NUM_TASKS", "1"))
    if "RANK" in os.environ or world <= 1 or "SLURM_PROCID" not in os.environ:
        return False
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
    return True


# The srun rendezvous (no torchrun): rank 0 listens on MASTER_PORT, the others connect. torch's client waits for
# ever on a port that another program holds (it connects, sends its handshake and reads no answer), so a taken
# port left every rank but 0 waiting while rank 0 had exited. The job's id in the store tells this job's rank 0
# from another job's store on the same port.
RENDEZVOUS_TIMEOUT = timedelta(minutes=30)  # torch's default for init_process_group
FOREIGN_S = 10.0  # a listener that has not answered as this job's store in this long is another program
JOB_KEY = "gsam/srun_job"


def _port_advice(port: int) -> str:
    return ("choose another: export MASTER_PORT=<a free port> in the job script, before srun (without it, the port "
            "is 20000 + SLURM_JOB_ID % 20000)")


def _job() -> str:
    return f"{os.environ.get('SLURM_JOB_ID', '')}.{os.environ.get('SLURM_STEP_ID', '')}"


def _listening(addr: str, port: int) -> bool:
    """Whether anything accepts TCP connections on addr:port."""
    try:
        socket.create_connection((addr, port), timeout=2).close()
        return True
    except OSError:
        return False


def srun_store(rank: int) -> dist.TCPStore:
    """This job's rendezvous store on MASTER_ADDR:MASTER_PORT: rank 0 hosts it, the others connect. A port that
    rank 0 cannot listen on, or that another program holds, is a ConfigError on every rank naming the port."""
    from gsam.config.checks import ConfigError

    addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    if rank == 0:
        try:
            store = dist.TCPStore(addr, port, is_master=True, timeout=RENDEZVOUS_TIMEOUT, wait_for_workers=False)
        except RuntimeError as e:
            reason = "address already in use" if "EADDRINUSE" in str(e) else str(e).splitlines()[0]
            raise ConfigError(f"MASTER_PORT={port}: rank 0 cannot listen on port {port} ({reason}); "
                              f"{_port_advice(port)}") from None
        store.set(JOB_KEY, _job())
        return store
    store = _connect(addr, port)
    try:
        store.wait([JOB_KEY], timedelta(seconds=FOREIGN_S))
        found = store.get(JOB_KEY).decode()
    except RuntimeError:
        found = None
    if found != _job():
        raise ConfigError(f"MASTER_PORT={port}: the store on {addr}:{port} is not this job's rank 0 (another job's"
                          f"{', ' + found if found else ''}); {_port_advice(port)}")
    return store


def _connect(addr: str, port: int) -> dist.TCPStore:
    """A client of the store on addr:port, waiting as long as rank 0 may take to start; ConfigError once a
    program listens there that has not answered as a store for FOREIGN_S (the client itself would wait on it for
    ever, in C++, without the GIL: hence the thread)."""
    from gsam.config.checks import ConfigError

    box = {}

    def connect():
        try:
            box["store"] = dist.TCPStore(addr, port, is_master=False, timeout=RENDEZVOUS_TIMEOUT)
        except RuntimeError as e:
            box["error"] = e

    thread = threading.Thread(target=connect, daemon=True, name="gsam-rendezvous")
    thread.start()
    listened = None
    while thread.is_alive():
        thread.join(0.5)
        if thread.is_alive() and _listening(addr, port):
            listened = listened or time.monotonic()
            if time.monotonic() - listened > FOREIGN_S:
                raise ConfigError(f"MASTER_PORT={port}: another program holds port {port} on {addr}, so rank 0 "
                                  f"could not listen there; {_port_advice(port)}")
    if "error" in box:
        raise ConfigError(f"MASTER_PORT={port}: no rendezvous with rank 0 on {addr}:{port} "
                          f"({str(box['error']).splitlines()[0]})")
    return box["store"]


def init_distributed(device: str = "auto") -> DistInfo:
    by_srun = _slurm_env()
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if use_cuda:
            torch.cuda.set_device(local_rank)
        if not dist.is_initialized():
            backend = "nccl" if use_cuda else "gloo"
            if by_srun:
                rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
                dist.init_process_group(backend, store=srun_store(rank), rank=rank, world_size=world)
            else:
                dist.init_process_group(backend)
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
