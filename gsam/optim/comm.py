"""The project's collectives, in one place: the world size, a barrier, and bucketed all-reduces (sum or
mean) of a list of tensors. Torch only, so that the optimizers, the analysis library and the trainer
(``gsam.distributed`` re-exports what it uses) share them without pulling anything else in.

Kept apart from the optimizer logic so that the update rules read as the papers write them.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

BUCKET_BYTES = 25 * 2**20


def world_size() -> int:
    """Number of processes in the default group, 1 when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _buckets(tensors: Sequence[torch.Tensor], bucket_bytes: int) -> list[list[torch.Tensor]]:
    """Tensors of one device and dtype per bucket (a flat buffer needs both), about ``bucket_bytes`` each."""
    groups: dict[tuple, list[torch.Tensor]] = defaultdict(list)
    for t in tensors:
        groups[(t.device, t.dtype)].append(t)
    buckets: list[list[torch.Tensor]] = []
    for group in groups.values():
        bucket, size = [], 0
        for t in group:
            bucket.append(t)
            size += t.numel() * t.element_size()
            if size >= bucket_bytes:
                buckets.append(bucket)
                bucket, size = [], 0
        if bucket:
            buckets.append(bucket)
    return buckets


def _all_reduce_(tensors: Sequence[torch.Tensor], mean: bool, bucket_bytes: int) -> None:
    """Sum (then divide by the world size when ``mean``) in place over ranks, in flattened buckets. The
    reduction is a SUM followed by a division because gloo has no AVG. At most two buckets are in flight,
    so the extra memory is two buckets, not a second copy of every tensor."""
    n = world_size()
    if n == 1 or not tensors:
        return
    in_flight: list[tuple[list[torch.Tensor], torch.Tensor, object]] = []

    def drain_one() -> None:
        bucket, flat, work = in_flight.pop(0)
        work.wait()
        if mean:
            flat.div_(n)
        torch._foreach_copy_(bucket, list(_unflatten_dense_tensors(flat, bucket)))

    for bucket in _buckets(tensors, bucket_bytes):
        flat = _flatten_dense_tensors(bucket)
        in_flight.append((bucket, flat, dist.all_reduce(flat, async_op=True)))
        if len(in_flight) > 1:
            drain_one()
    while in_flight:
        drain_one()


def all_reduce_mean_(tensors: Sequence[torch.Tensor], bucket_bytes: int = BUCKET_BYTES) -> None:
    """Average ``tensors`` in place across all ranks (every rank passes the same shapes in the same order)."""
    _all_reduce_(tensors, True, bucket_bytes)


def all_reduce_sum_(tensors: Sequence[torch.Tensor], bucket_bytes: int = BUCKET_BYTES) -> None:
    """Sum ``tensors`` in place across all ranks (a no-op in one process)."""
    _all_reduce_(tensors, False, bucket_bytes)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed in place across ranks, returned (for one small tensor: a flag, a count)."""
    all_reduce_sum_([t])
    return t


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean of a small tensor over ranks (a copy; the input is left alone)."""
    if world_size() == 1:
        return t
    t = t.clone()
    all_reduce_mean_([t])
    return t


def broadcast_from_first(t: torch.Tensor) -> torch.Tensor:
    """Rank 0's ``t`` on every rank (a copy; the input is left alone): one choice for all, whatever the ranks
    computed."""
    if world_size() == 1:
        return t
    t = t.clone()
    dist.broadcast(t, src=0)
    return t


def global_batch_head(t: torch.Tensor, n: int) -> torch.Tensor:
    """The first ``n`` rows of the step's global batch, on every rank, in the global order.

    The training sampler deals the global batch out interleaved: rank r holds the global rows r, r + W,
    r + 2W, ... (data/folder.py ``ShardSampler``: ``order[rank::world]`` of each epoch's permutation, then
    consecutive local batches), so the first ``ceil(n / W)`` local rows of every rank, gathered and
    interleaved back, are the global rows 0 .. n - 1, whatever W is."""
    w = world_size()
    if n > t.shape[0] * w:
        raise ValueError(f"{n} images asked of a global batch of {t.shape[0] * w}")
    if w == 1:
        return t[:n]
    local = t[: -(-n // w)].contiguous()
    parts = [torch.empty_like(local) for _ in range(w)]
    dist.all_gather(parts, local)
    return torch.stack(parts, 1).flatten(0, 1)[:n]
