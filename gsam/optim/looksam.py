"""LookSAM (Liu et al., "Towards Efficient and Scalable Sharpness-Aware Minimization", CVPR 2022, Algorithm 1),
and the same reuse applied to GSAM's update (LookGSAM: ours, not in either paper).

Step t (0-based calls of ``step``), g = grad f(w)::

    t % k == 0 (refresh, two passes):
        g_s = grad f(w + rho g/(||g|| + eps))                 SAM's gradient; with gsam_alpha > 0 (ours)
                                                              GSAM's d = g_p - gsam_alpha g_perp instead
        g_v = g_s - (<g, g_s>/||g||^2) g                      = g_s - ||g_s|| cos(g, g_s) g/||g||: the part of
                                                              g_s orthogonal to g, stored for the next steps
        d   = g_s
    otherwise (reuse, one pass):
        d   = g + alpha (||g|| / ||g_v||) g_v                 the stored direction, rescaled to this step's g

k = 1 is SAM (GSAM with gsam_alpha > 0) bit for bit: g_v is computed but never used. The paper reports LookSAM
at k = 5 close to SAM on ImageNet ViTs with alpha tuned (0.7 in the widely used re-implementation,
Leminhbinh0209/LookSAM). Mean passes per step: 1 + 1/k.

With perturbation groups (and ranks) the rule is Algorithm 1 on the step's mean gradient. A refresh stores the mean
over the step's groups of each group's g_v (one parameter-sized buffer, not one per group); a reuse step forms
    d = g_mean + alpha (||g_mean|| / ||g_v||) g_v,        g_mean = the mean over every group of every rank of g_g,
so the push along g_v is alpha ||g_mean||, alpha times the step's gradient whatever the number of groups. One group
on one process is Algorithm 1 exactly (bit for bit the rule before). Each group's d_g stays its own g_g; the term is
added once, after the step's one all-reduce of d, from the norm of the averaged d (no extra collective, no extra
buffer). Why not the two alternatives: rescaling the shared g_v by one group's ||g_g|| (the rule before) let the
push grow with the group count, because the mean g_v's noise averages out and a group's ||g_g|| keeps its own
(measured, alpha 0.7, 256 images of random labels: 0.70, 0.77, 0.85, 1.08 x ||g_mean|| with 1, 2, 4, 8 groups;
tests/test_looksam_groups.py); per-group g_v (each group reuses its own, as LookSAM run per device would) is
consistent too but holds one g_v per group between steps: G more parameter-sized buffers, 128 for a Table 1 run of
4096 images in groups of 32 on one GPU (ViT-B/32, 88M float32 parameters: 45 GB), 16 per GPU on 8.
Under data parallelism with per-worker perturbation each process forms the mean over its own groups, and the
refresh step's one all-reduce carries it with d: every rank stores the mean over all the global batch's groups,
the g_v of one process holding them all (twice d's volume on one step in k; no extra collective). Kept per
process, g_v would differ between ranks and the run would depend on the number of processes. A refresh whose
step turns out non-finite leaves no usable g_v: the next step refreshes.
Memory: SAM's (the copy of the weights) plus g_v, both held between steps and g_v in the checkpoint.
"""
from __future__ import annotations

import torch

from .base import Closure, NonNegative
from .gsam import descend_with_gap_
from .periodic import Periodic, check_period
from .sam import SAM


class LookSAM(Periodic, SAM):
    """LookSAM with period ``k`` and reuse strength ``alpha``; ``gsam_alpha`` > 0 reuses GSAM's update (ours).
    With groups, the reuse is rescaled to the step's mean gradient (the module's docstring says why)."""

    alpha = NonNegative()
    gsam_alpha = NonNegative()

    def __init__(self, params, base_optimizer, rho: float = 0.05, k: int = 5, alpha: float = 0.7,
                 gsam_alpha: float = 0.0, adaptive: bool = False, **kwargs):
        super().__init__(params, base_optimizer, rho=rho, adaptive=adaptive, **kwargs)
        self.k = check_period(k)
        self.alpha = alpha
        self.gsam_alpha = gsam_alpha
        self._gv: dict[torch.Tensor, torch.Tensor] = {}  # parameter -> its slice of g_v
        self._gv_norm: torch.Tensor | None = None  # None: no usable g_v (start, or a skipped refresh)
        self._refresh_now = False
        self._groups = 1

    def step(self, closure):
        """As every method's; decides once per step whether it refreshes g_v (all groups alike)."""
        self._groups = len(self._closures(closure))
        self._refresh_now = self._full_due() or self._gv_norm is None
        stats = super().step(closure)
        if self._refresh_now and not stats.skipped:
            self._gv_norm = self._norm(list(self._gv.values()))  # of g_v as averaged over the ranks
        return stats

    def _sharpness_step(self, closure: Closure):
        return self._refresh(closure) if self._refresh_now else self._reuse(closure)

    def _refresh(self, closure: Closure):
        ps, loss, g, grad_norm, perturbed_loss, g_p, gp_norm, g_dot_gp = self._ascent(closure)
        g_dot_d = g_dot_gp
        if self.gsam_alpha:
            descend_with_gap_(g_p, g, g_dot_gp, gp_norm, self.gsam_alpha)  # g_p becomes GSAM's d
            g_dot_d = self._dot(g, g_p)
        self._store_orthogonal(ps, g_p, g, -g_dot_d / grad_norm.square().clamp_min(self._tiny(grad_norm)))
        return ps, self._diagnostics(loss, grad_norm, perturbed_loss, gp_norm, g_dot_gp)

    def _store_orthogonal(self, ps, d, g, coef: torch.Tensor) -> None:
        """g_v = d + coef g (coef = -<g, d>/||g||^2), averaged over the step's groups."""
        gv = [self._gv[p] if p in self._gv else self._gv.setdefault(p, torch.zeros_like(p)) for p in ps]
        if self._group == 0:
            active = set(ps)
            # with groups, a parameter group 0 did not reach adds from zero; one that no pass reached is zero
            zero = list(self._gv.values()) if self._groups > 1 else [t for p, t in self._gv.items() if p not in active]
            if zero:
                torch._foreach_zero_(zero)
            if self._groups == 1:
                torch._foreach_copy_(gv, d)
        if self._group > 0 or self._groups > 1:
            torch._foreach_add_(gv, d)
        self._add_scaled_(gv, g, coef)
        if self._group == self._groups - 1 and self._groups > 1:
            torch._foreach_div_(list(self._gv.values()), self._groups)

    def _reduced_with_d(self) -> list[torch.Tensor]:
        return [self._gv[p] for p in self._params() if p in self._gv] if self._refresh_now else []

    def _reuse(self, closure: Closure):
        """d_g = g_g; the reuse term is added to the step's mean (``_after_mean``)."""
        ps, loss, _, grad_norm = self._clean_pass(closure)
        return ps, self._one_pass_fields(loss, grad_norm)

    def _after_mean(self, active: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        """On a reuse step: d = g_mean + alpha (||g_mean|| / ||g_v||) g_v, g_mean the averaged d of every group
        and rank (still in the loss scale's units, as g_v: the ratio of norms does not depend on the scale)."""
        if self._refresh_now or not grads:
            return
        kept = [(p, gi) for p, gi in zip(active, grads) if p in self._gv]  # a parameter without g_v gets d = g
        scale = self.alpha * self._norm(grads) / self._gv_norm.clamp_min(self.eps)  # g_v = 0 adds nothing
        self._add_scaled_([gi for _, gi in kept], [self._gv[p] for p, _ in kept], scale)

    def _on_skip(self) -> None:
        if self._refresh_now:
            self._gv_norm = None  # this refresh's g_v is not finite: refresh again at the next step

    def _extra_state(self) -> dict:
        ps = self._params()
        return {**super()._extra_state(), "k": self.k, "alpha": self.alpha, "gsam_alpha": self.gsam_alpha,
                "g_v": [self._gv.get(p) for p in ps], "g_v_norm": self._gv_norm}

    def _load_extra_state(self, state: dict) -> None:
        super()._load_extra_state(state)
        self.k = check_period(state["k"])
        self.alpha = state["alpha"]
        self.gsam_alpha = state["gsam_alpha"]
        ps = self._params()
        if len(state["g_v"]) != len(ps):
            raise ValueError(f"the saved LookSAM state has g_v for {len(state['g_v'])} tensors, "
                             f"the model has {len(ps)}")
        self._gv = {p: t.to(device=p.device, dtype=p.dtype) for p, t in zip(ps, state["g_v"]) if t is not None}
        norm = state["g_v_norm"]
        self._gv_norm = None if norm is None else norm.to(ps[0].device)
