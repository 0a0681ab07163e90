"""Per-step schedules: the learning rate (warm-up, then decay) and rho tied to it (Algorithm 1, step 0)."""
from __future__ import annotations

import math


def rho_from_lr(lr: float, *, lr_max: float, lr_min: float, rho_max: float, rho_min: float) -> float:
    """rho_t = rho_min + (rho_max - rho_min)(lr_t - lr_min)/(lr_max - lr_min), clamped to [rho_min, rho_max].

    ``lr`` is the absolute learning rate of the same step. The clamp matters during warm-up from
    lr = 0 < lr_min, where the unclamped map of the references gives rho < 0 (big_vision#80). With
    a constant lr (lr_max == lr_min) rho is rho_max: constant-rho SAM.
    """
    if rho_min < 0 or rho_max < rho_min:
        raise ValueError(f"need 0 <= rho_min <= rho_max, got rho_min={rho_min}, rho_max={rho_max}")
    if lr_max < lr_min:
        raise ValueError(f"need lr_min <= lr_max, got lr_min={lr_min}, lr_max={lr_max}")
    if lr_max == lr_min:
        return float(rho_max)
    rho = rho_min + (rho_max - rho_min) * (lr - lr_min) / (lr_max - lr_min)
    return float(min(max(rho, rho_min), rho_max))


def lr_at(step: int, *, total_steps: int, warmup_steps: int, lr_max: float, lr_min: float,
          decay: str = "linear") -> float:
    """Learning rate of optimisation step ``step`` (0-based).

    Linear warm-up from 0 to ``lr_max`` over ``warmup_steps`` (step ``warmup_steps - 1`` reaches
    lr_max), then ``linear`` or ``cosine`` decay to ``lr_min`` at ``total_steps``, or ``constant``.
    """
    if total_steps <= 0 or not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"need 0 <= warmup_steps <= total_steps and total_steps > 0, "
                         f"got warmup_steps={warmup_steps}, total_steps={total_steps}")
    if step < warmup_steps:
        return lr_max * (step + 1) / warmup_steps
    if decay == "constant":
        return lr_max
    span = max(total_steps - warmup_steps, 1)
    t = min(max(step - warmup_steps, 0) / span, 1.0)
    if decay == "linear":
        return lr_max + (lr_min - lr_max) * t
    if decay == "cosine":
        return lr_min + 0.5 * (lr_max - lr_min) * (1.0 + math.cos(math.pi * t))
    raise ValueError(f"decay must be 'linear', 'cosine' or 'constant', got {decay!r}")
