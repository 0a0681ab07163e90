"""SAM (Foret et al., 2021) and ASAM (Kwon et al., 2021): descend along the gradient at w_adv."""
from __future__ import annotations

from .base import Closure, SharpnessAware


class SAM(SharpnessAware):
    """SAM: w_adv = w + rho g/(||g||+eps); the base optimizer receives d = g_p = grad f(w_adv).

    ``adaptive=True`` is ASAM in the form of the PyTorch references (davda54/sam, the official GSAM
    code): e = rho w^2 g / (|| |w| g || + eps), i.e. T_w = |w| with no eta, on every tensor. Two other
    "adaptive" forms exist: big_vision's GSAM uses e = rho |w| g / (||g|| + eps), and the official
    ASAM uses T_w = |w| + 0.01 on weight tensors only. The adaptive radius is ~10x the plain one
    (the ASAM authors suggest rho = 2.0 for SGD on CIFAR).

    One step = 2 forward-backward passes; the closure is called exactly twice. Memory: a copy of
    the weights (restored exactly, never by subtraction), and g kept through the second pass.
    """

    def __init__(self, params, base_optimizer, rho: float = 0.05, adaptive: bool = False, **kwargs):
        super().__init__(params, base_optimizer, rho=rho, **kwargs)
        self.adaptive = bool(adaptive)

    def _ascent(self, closure: Closure):
        """Passes 1 and 2 of Algorithm 1: (active params, f, g, ||g||, f_p, g_p, ||g_p||, <g, g_p>)."""
        loss = self._grad_pass(closure, clean=True)
        ps = self._active()
        self._save_weights(ps)
        g = self._take_grads(ps)
        grad_norm = self._perturb(ps, g, self.rho, self.adaptive)
        perturbed_loss = self._grad_pass(closure, clean=False)
        self._restore_weights(ps)
        g_p = self._grads(ps)
        return ps, loss, g, grad_norm, perturbed_loss, g_p, self._norm(g_p), self._dot(g, g_p)

    def _diagnostics(self, loss, grad_norm, perturbed_loss, gp_norm, g_dot_gp) -> dict:
        tiny = self._tiny(gp_norm)
        return dict(loss=loss, perturbed_loss=perturbed_loss, grad_norm=self._unscale(grad_norm),
                    perturbed_grad_norm=self._unscale(gp_norm),
                    cos=g_dot_gp / (grad_norm * gp_norm).clamp_min(tiny), alpha=self.alpha)

    def _sharpness_step(self, closure: Closure):
        ps, loss, _, grad_norm, perturbed_loss, _, gp_norm, g_dot_gp = self._ascent(closure)
        return ps, self._diagnostics(loss, grad_norm, perturbed_loss, gp_norm, g_dot_gp)  # d = g_p
