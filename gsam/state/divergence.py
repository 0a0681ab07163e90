"""An optional guard against a run that diverges without ever producing a non-finite number (lr=1e6 reached a
loss of 3e12, finite, so no step was skipped and the checkpoints went on). ``train.divergence_factor``: stop
when a step's clean loss exceeds that factor times the median of the last ``window`` steps. Off by default: a
loss spike can be legitimate (a hard batch, the end of warm-up), and only the run's owner knows its scale."""
from __future__ import annotations

import collections
import statistics

import torch
import torch.distributed as dist

from gsam.distributed import all_reduce_sum


class DivergenceGuard:
    MIN_HISTORY = 5  # steps before the median means anything

    def __init__(self, factor: float | None, window: int = 50):
        self.factor = factor
        self.recent: collections.deque[float] = collections.deque(maxlen=window)

    def check(self, step: int, loss: torch.Tensor) -> None:
        """Raise FloatingPointError when ``loss`` (this rank's; averaged over ranks, so that every rank stops at
        the same step) is above factor x the recent median. The window is not checkpointed: after a resume
        the guard waits for MIN_HISTORY steps again."""
        if not self.factor:
            return
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        value = all_reduce_sum(loss.detach().float().clone()).item() / world
        if len(self.recent) >= self.MIN_HISTORY:
            median = statistics.median(self.recent)
            if value > self.factor * median:
                raise FloatingPointError(
                    f"stopping at step {step}: loss {value:.4g} is over {self.factor:g}x the median of the last "
                    f"{len(self.recent)} steps ({median:.4g}) (train.divergence_factor={self.factor:g})")
        self.recent.append(value)
