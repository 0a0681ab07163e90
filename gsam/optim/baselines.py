"""The two alternatives to GSAM that the paper argues against (Sec. 4.1, Sec. 6.4, Table 2, Fig. 6).

- ``WeightedGap``: gradient descent on the weighted sum f_p + lam h. With h = f_p - f (Eq. 4) its
  gradient is (1 + lam) grad f_p - lam grad f, so d = (1 + lam) g_p - lam g. The paper's caveat:
  grad h = g_p - g may conflict with g_p and raise f_p.
- ``GSAMMinF``: min(f, h) instead of GSAM's min(f_p, h) (big_vision ``minimize_fp=False``): descend
  on f and, orthogonally to g, on f_p (which lowers h = f_p - f without changing f to first
  order): with g_p_perp = g_p - (<g, g_p>/||g||^2) g, d = g + alpha g_p_perp.

Both use SAM's two passes (the same perturbation, BN freeze, DDP, AMP, clipping); only d differs.
"""
from __future__ import annotations

import torch

from .base import Closure, NonNegative
from .gsam import GSAM
from .sam import SAM


class WeightedGap(SAM):
    """Minimise f_p + lam h directly: d = (1 + lam) g_p - lam g. ``lam = 0`` is SAM."""

    lam = NonNegative()

    def __init__(self, params, base_optimizer, rho: float = 0.05, lam: float = 0.1, adaptive: bool = False,
                 **kwargs):
        super().__init__(params, base_optimizer, rho=rho, adaptive=adaptive, **kwargs)
        self.lam = lam

    def _sharpness_step(self, closure: Closure):
        ps, loss, g, grad_norm, perturbed_loss, g_p, gp_norm, g_dot_gp = self._ascent(closure)
        torch._foreach_mul_(g_p, 1.0 + self.lam)  # in place: g_p becomes d
        torch._foreach_add_(g_p, g, alpha=-self.lam)
        return ps, self._diagnostics(loss, grad_norm, perturbed_loss, gp_norm, g_dot_gp)

    def _extra_state(self) -> dict:
        return {**super()._extra_state(), "lam": self.lam}

    def _load_extra_state(self, state: dict) -> None:
        super()._load_extra_state(state)
        self.lam = state["lam"]


class GSAMMinF(GSAM):
    """min(f, h) (Fig. 6, right): d = g + alpha (g_p - (<g, g_p>/||g||^2) g). ``alpha = 0`` is SGD on
    f with SAM's cost. GSAM's ``alpha`` (checked, saved in the state) with another d."""

    def _sharpness_step(self, closure: Closure):
        ps, loss, g, grad_norm, perturbed_loss, g_p, gp_norm, g_dot_gp = self._ascent(closure)
        parallel = g_dot_gp / grad_norm.square().clamp_min(self._tiny(grad_norm))  # g_p's part along g
        # d = alpha g_p + (1 - alpha parallel) g, in place in g_p
        torch._foreach_mul_(g_p, self.alpha)
        self._add_scaled_(g_p, g, 1.0 - self.alpha * parallel)
        return ps, self._diagnostics(loss, grad_norm, perturbed_loss, gp_norm, g_dot_gp)
