"""SAM (Foret et al., 2021) and ASAM (Kwon et al., 2021): descend along the gradient at w_adv."""
from __future__ import annotations

import torch

from .base import Closure, SharpnessAware, _flat


class SAM(SharpnessAware):
    """SAM: w_adv = w + rho g/(||g||+eps); the base optimizer receives d = g_p = grad f(w_adv).

    ``adaptive=True`` is ASAM in the form of the PyTorch references (davda54/sam, the official GSAM
    code): e = rho w^2 g / (|| |w| g || + eps), i.e. T_w = |w| with no eta, on every tensor. Two other
    "adaptive" forms exist: big_vision's GSAM uses e = rho |w| g / (||g|| + eps), and the official
    ASAM uses T_w = |w| + 0.01 on weight tensors only. The adaptive radius is ~10x the plain one
    (the ASAM authors suggest rho = 2.0 for SGD on CIFAR).

    One step = 2 forward-backward passes; the closure is called exactly twice.
    Buffers: one parameter-sized copy of the weights (restored exactly, never by subtraction).
    """

    def __init__(self, params, base_optimizer, rho: float = 0.05, adaptive: bool = False, **kwargs):
        super().__init__(params, base_optimizer, rho=rho, **kwargs)
        self.adaptive = bool(adaptive)

    @property
    def alpha(self) -> float:
        return 0.0

    def _sharpness_step(self, closure: Closure):
        loss = self._grad_pass(closure, clean=True)
        ps = self._active()
        saved = self._save_weights(ps)
        grad_norm = self._perturb(ps, self.rho, self.adaptive)
        perturbed_loss = self._grad_pass(closure, clean=False)
        grads = self._grads(ps)
        # cos(g, g_p) from the displacement e = w_adv - w, parallel to g (not with ASAM), one
        # parameter at a time so SAM keeps a single buffer.
        e_dot_gp = torch.stack([torch.dot(_flat(p - w, like=p), _flat(gp, like=p)) for p, w, gp in zip(ps, saved, grads)]).sum()
        self._restore_weights(ps)
        gp_norm = self._norm(grads)
        e_norm = self.rho if not self.adaptive else float("nan")
        return ps, dict(loss=loss, perturbed_loss=perturbed_loss, grad_norm=self._unscale(grad_norm),
                        perturbed_grad_norm=self._unscale(gp_norm),
                        cos=e_dot_gp / (e_norm * gp_norm).clamp_min(torch.finfo(gp_norm.dtype).tiny),
                        alpha=0.0)
