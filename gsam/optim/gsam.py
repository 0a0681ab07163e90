"""GSAM: Surrogate Gap Guided Sharpness-Aware Minimization (Zhuang et al., ICLR 2022, Algorithm 1).

Per step, with g = grad f(w) and the radius rho_t from the lr of the same step (``rho_from_lr``)::

    1a) e      = rho_t g / (||g|| + eps)               (ASAM form with adaptive=True)
    1b) w_adv  = w + e
    2)  g_p    = grad f(w_adv)                          perturbed_loss = f(w_adv)
    3)  g_perp = g - (<g, g_p> / ||g_p||^2) g_p         decompose g against g_p (Eq. 6)
    4)  d      = g_p - alpha g_perp                     descend on f_p, ascend along g_perp
        base_optimizer.step() with grad = d             weight decay / momentum enter only here

``alpha = 0`` is SAM; the ascent along g_perp lowers the surrogate gap h = f_p - f (Eq. 4,
Thm. 5.3) without changing f_p to first order. The projection is exact, as in big_vision (the
original implementation); the official PyTorch demo code puts eps = 1e-12 into the cosine and into
||g_p||, which changes d by O(1e-12) relative. Norms and dot products are float64 for float64
models. Memory: a copy of the weights (exact restore), and g kept through the second pass.
"""
from __future__ import annotations

import torch

from .base import Closure, NonNegative
from .sam import SAM


def descend_with_gap_(g_p: list[torch.Tensor], g: list[torch.Tensor], g_dot_gp: torch.Tensor,
                      gp_norm: torch.Tensor, alpha: float) -> None:
    """Step 4 of Algorithm 1 in place: g_p becomes d = g_p - alpha g_perp (g_perp of Eq. 6)."""
    parallel = g_dot_gp / gp_norm.square().clamp_min(torch.finfo(gp_norm.dtype).tiny)  # g_par = parallel * g_p
    # d = g_p - alpha (g - parallel g_p) = (1 + alpha parallel) g_p - alpha g
    torch._foreach_mul_(g_p, 1.0 + alpha * parallel)
    torch._foreach_add_(g_p, g, alpha=-alpha)


class GSAM(SAM):
    """GSAM (Algorithm 1). ``alpha`` >= 0; Table 4 uses values from 0.005 up to 1.0."""

    alpha = NonNegative()

    def __init__(self, params, base_optimizer, rho: float = 0.05, alpha: float = 0.4,
                 adaptive: bool = False, **kwargs):
        super().__init__(params, base_optimizer, rho=rho, adaptive=adaptive, **kwargs)
        self.alpha = alpha

    def _sharpness_step(self, closure: Closure):
        ps, loss, g, grad_norm, perturbed_loss, g_p, gp_norm, g_dot_gp = self._ascent(closure)
        descend_with_gap_(g_p, g, g_dot_gp, gp_norm, self.alpha)
        return ps, self._diagnostics(loss, grad_norm, perturbed_loss, gp_norm, g_dot_gp)

    def _extra_state(self) -> dict:
        return {**super()._extra_state(), "alpha": self.alpha}

    def _load_extra_state(self, state: dict) -> None:
        super()._load_extra_state(state)
        self.alpha = state["alpha"]
