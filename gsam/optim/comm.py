"""Collectives used by the optimizers: one bucketed all-reduce of a list of tensors.

Kept apart from the optimizer logic so that the update rules read as the papers write them.
"""
from __future__ import annotations

from collections import defaultdict

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors


def world_size() -> int:
    """Number of processes in the default group, 1 when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def all_reduce_mean_(tensors: list[torch.Tensor], bucket_bytes: int = 25 * 2**20) -> None:
    """Average ``tensors`` in place across all ranks, in flattened buckets of about ``bucket_bytes``.

    Every rank must pass tensors of the same shapes in the same order. The reduction is a SUM
    followed by a division because gloo has no AVG. At most two buckets are in flight, so the extra
    memory is two buckets, not a second copy of every gradient.
    """
    n = world_size()
    if n == 1 or not tensors:
        return
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

    in_flight: list[tuple[list[torch.Tensor], torch.Tensor, object]] = []

    def drain_one() -> None:
        bucket, flat, work = in_flight.pop(0)
        work.wait()
        flat.div_(n)
        torch._foreach_copy_(bucket, list(_unflatten_dense_tensors(flat, bucket)))

    for bucket in buckets:
        flat = _flatten_dense_tensors(bucket)
        in_flight.append((bucket, flat, dist.all_reduce(flat, async_op=True)))
        if len(in_flight) > 1:
            drain_one()
    while in_flight:
        drain_one()


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean of a small tensor over ranks (a copy; the input is left alone)."""
    n = world_size()
    if n == 1:
        return t
    t = t.clone()
    dist.all_reduce(t)
    return t.div_(n)
