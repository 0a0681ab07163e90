"""The baseline as one of the methods: one pass, d = g, with the same AMP, clipping, non-finite
skip, checkpoint and diagnostics interface as the sharpness-aware optimizers."""
from __future__ import annotations

import torch

from .base import Closure, SharpnessAware


class Vanilla(SharpnessAware):
    """Plain training through ``step(closure)``. Under DDP the single backward synchronises as
    usual (overlapped with compute); there is no perturbation, so rho is 0 and the gap is 0."""

    perturbs = False

    def __init__(self, params, base_optimizer, **kwargs):
        kwargs.pop("rho", None)
        kwargs.pop("rho_min", None)
        super().__init__(params, base_optimizer, rho=0.0, sync_perturbation=True, **kwargs)

    def _sharpness_step(self, closure: Closure):
        loss = self._grad_pass(closure, clean=True)
        ps = self._active()
        grad_norm = self._unscale(self._norm(self._grads(ps))) if ps else torch.zeros(())
        nan = torch.full_like(grad_norm, float("nan"))
        return ps, dict(loss=loss, perturbed_loss=loss, grad_norm=grad_norm, perturbed_grad_norm=nan,
                        cos=nan, alpha=0.0)
