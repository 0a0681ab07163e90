"""What the efficient variants share: the full sharpness-aware step once every k calls of ``step``, and the
one-pass step at w that replaces it in between (every-k, LookSAM).

The schedule counts calls of ``step`` (``steps_taken + steps_skipped``, both in the checkpoint), so a resumed
run keeps its phase and a non-finite step does not shift it. A one-pass step has no perturbed pass, so the
surrogate gap h and the sharpness estimate 2h/rho^2 are not measured there: they are NaN in its StepStats
(never 0, which would read as a flat point), as are ||g_p|| and cos(g, g_p).
"""
from __future__ import annotations

import torch

from .base import Closure


def check_period(k) -> int:
    """k, the period of the full step: an integer >= 1 (1 = every step is the full method)."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be an integer >= 1 (the full sharpness-aware step every k steps), got {k!r}")
    return k


class Periodic:
    """Mixin for a ``SharpnessAware`` subclass: ``k``, the schedule and the one-pass step."""

    k: int

    def _full_due(self) -> bool:
        """The full step at calls 0, k, 2k, ... (Composer's SAM runs it at calls k-1, 2k-1, ...: the same
        period, the phase shifted by one step)."""
        return (self.steps_taken + self.steps_skipped) % self.k == 0

    def _clean_pass(self, closure: Closure):
        """One forward-backward pass at w: (active params, f, g (left in p.grad), ||g||)."""
        loss = self._grad_pass(closure, clean=True)
        ps = self._active()
        g = self._grads(ps)
        return ps, loss, g, self._norm(g)

    def _one_pass_fields(self, loss: torch.Tensor, grad_norm: torch.Tensor) -> dict:
        nan = torch.full_like(grad_norm, float("nan"))
        return dict(loss=loss, perturbed_loss=torch.full_like(loss, float("nan")),
                    grad_norm=self._unscale(grad_norm), perturbed_grad_norm=nan, cos=nan, alpha=self.alpha)
