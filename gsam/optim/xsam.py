"""XSAM: eXplicit Sharpness-Aware Minimization (Chen & Zhou, ICLR 2026).

Per step, as the official code computes it (github.com/Cccjl219/XSAM, ``utils/xsam.py``)::

    for i in 0..k-1:  g_i = grad f(theta_i);  theta_{i+1} = theta_i + (rho/k) g_i / (||g_i|| + eps)
    g_k   = grad f(theta_k)                                      perturbed_loss = f(theta_k)
    v0    = (theta_k - theta_0) / ||theta_k - theta_0||          the total ascent displacement
    v1    = g_k / ||g_k||
    phi   = arccos(<v0, v1>)                                     (clamped to [-1, 1])
    v(a)  = [sin((1-a) phi) v0 + sin(a phi) v1] / sin(phi)       spherical interpolation (Eq. 6)
    a*    = argmax_{a in grid} f(theta_0 + rho_probe v(a))       forward passes only, every
                                                                 ``search_every`` steps
    d     = ||g_k|| v(a*)                                        given to the base optimizer

a = 1 gives d = g_k exactly (k-step SAM); a = 0 the normalised ascent direction. a* is kept between
searches while phi, v0, v1 are recomputed every step. Differences from the official code, all
deliberate: the displacement is accumulated explicitly (exact in low precision too), arccos is
clamped, the weights are restored from a copy, and when sin(phi) < 1e-8 v(a) falls back to the
limit of the slerp, (1-a) v0 + a v1, instead of the official (v0 + v1)/2 that ignores a (so k=1,
a=1 stays bitwise SAM).

When a* is searched: at the first step of every ``search_every_epochs``-th epoch, on the loop's counters
that ``before_step`` receives (the official ``batch_idx == 1``), and every ``search_every`` calls of ``step``.
Where: on ``search_closure``, which ``before_step`` takes from the loop when it offers the head of the global
batch (``StepClock.head``: the first ``search_images`` images, gathered on every rank), with its own clean pass,
ascent and v0, v1, phi from theta_0: the official code's search on one batch, on images that do not
depend on the number of processes. Without it, on the step's group 0 with that group's directions.
Rank 0's probe losses are broadcast (averaged under sync_perturbation, where every pass is the global
batch's), so every rank keeps the same a*. The official code is
single-GPU, where the search sees its whole batch of 128 (docs/optimizers.md). Memory: a copy of
theta_0, and the displacement, accumulated in the first pass's gradient tensors (kept instead of copied).
"""
from __future__ import annotations

import torch

from .base import Closure, NonNegative, SharpnessAware, StepClock, _check_nonneg
from .comm import all_reduce_mean, broadcast_from_first

DEFAULT_ALPHA_GRID = tuple(round(0.1 * i, 10) for i in range(21))  # 0, 0.1, ..., 2.0 (official)


def slerp_coefficients(alpha: float, phi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(c0, c1) with v(alpha) = c0 v0 + c1 v1 (Eq. 6); the linear limit when sin(phi) ~ 0."""
    s = torch.sin(phi)
    small = s < 1e-8
    c0 = torch.where(small, torch.full_like(phi, 1.0 - alpha), torch.sin((1.0 - alpha) * phi) / s)
    c1 = torch.where(small, torch.full_like(phi, alpha), torch.sin(alpha * phi) / s)
    return c0, c1


class XSAM(SharpnessAware):
    """XSAM with ``steps`` ascent steps of rho/steps, probe radius ``rho_probe`` and the alpha* search.

    Args:
        rho: total length of the ascent path (the official ``--rho``; 0.15 for ResNet-18/CIFAR-100): the official
            ``train.py`` hands its optimizer ``--rho / --steps``, which ``first_step`` moves on each step.
        rho_probe: radius at which the candidate directions are probed (official ``--rho_max``, 2 rho).
        steps: k, the number of ascent steps (k+1 forward-backward passes per step).
        alpha: alpha* used until the first search (1.0 = SAM); after a search, the one found.
        search_every: search alpha* every that many calls of ``step``, starting with the first, skipped
            steps counted (a loop step is a call); 0 = never. ``search_next`` overrides it for one step.
        search_every_epochs: search alpha* at the first step of every that many epochs, on the counters of
            ``before_step`` (epoch 0 included); 0 = never. Default 1: the official ``--is_dynamic`` searches
            once per epoch, on its first batch (``batch_idx == 1``); without a search XSAM is SAM (alpha 1.0).
        search_images: alpha* on the first that many images of the global batch when the loop offers them
            (``StepClock.head``; None: the whole global batch); without the loop, on the step's group 0.
        alpha_grid: candidate alphas (default 0, 0.1, ..., 2.0: 21 forward passes per search).
    """

    alpha = NonNegative()
    rho_probe = NonNegative()

    def __init__(self, params, base_optimizer, rho: float = 0.05, rho_probe: float = 0.1,
                 steps: int = 1, alpha: float = 1.0, search_every: int = 0, search_every_epochs: int = 1,
                 search_images: int | None = None, alpha_grid=DEFAULT_ALPHA_GRID, **kwargs):
        super().__init__(params, base_optimizer, rho=rho, **kwargs)
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
        for name, every in (("search_every", search_every), ("search_every_epochs", search_every_epochs)):
            if not isinstance(every, int) or isinstance(every, bool) or every < 0:
                raise ValueError(f"{name} must be an integer >= 0 (0 = never search), got {every!r}")
        if search_images is not None and (isinstance(search_images, bool) or not isinstance(search_images, int)
                                          or search_images < 1):
            raise ValueError(f"search_images must be None or an integer >= 1, got {search_images!r}")
        grid = tuple(_check_nonneg("alpha_grid", float(a)) for a in alpha_grid)
        if not grid:
            raise ValueError("alpha_grid must contain at least one value")
        self.rho_probe = rho_probe
        self.steps = steps
        self.alpha = alpha
        self.search_every = search_every
        self.search_every_epochs = search_every_epochs
        self.search_images = search_images
        self.alpha_grid = grid
        self.searches = 0
        # True: search in the next step whatever ``search_every`` says (``before_step`` sets it on the epoch
        # cadence), False: do not; None = ``search_every``; reset by step()
        self.search_next: bool | None = None
        # the images alpha* is chosen on, as a closure (the head of the global batch that ``before_step`` gets,
        # the same on every rank); None = the step's group 0; reset by step()
        self.search_closure = None

    def before_step(self, clock: StepClock) -> None:
        """rho_t as every method; then the epoch cadence of the search, and its images when the loop offers them."""
        super().before_step(clock)
        every = self.search_every_epochs
        if every and clock.batch_in_epoch == 0 and clock.epoch % every == 0:
            self.search_next = True
        if clock.head is not None and self._search_due():
            self.search_closure = clock.head(self.search_images)

    def _search_due(self) -> bool:
        """Only group 0 searches; the schedule counts loop steps (taken and skipped)."""
        if self._group != 0:
            return False
        if self.search_next is not None:
            return bool(self.search_next)
        calls = self.steps_taken + self.steps_skipped
        return self.search_every > 0 and calls % self.search_every == 0

    def _ascend(self, closure: Closure, ps: list[torch.Tensor]) -> dict:
        """From theta_0, whose clean gradients are in ``p.grad``: k steps of rho/k, then g_k at theta_k.
        Leaves the weights at theta_k; returns what the slerp and the search need."""
        for i in range(self.steps):
            if i > 0:
                self._grad_pass(closure, clean=False)
            grads = self._take_grads(ps) if i == 0 else self._grads(ps)
            norm = self._norm(grads)
            scale = (self.rho / self.steps) / (norm + self.eps)
            self._add_scaled_(ps, grads, scale)  # the same operation as SAM's perturbation
            if i == 0:  # theta_i - theta_0 = disp_scale * disp, kept in g_0's tensors (no copy)
                grad_norm, disp, disp_scale = norm, grads, scale
            else:
                self._add_scaled_(disp, grads, scale / disp_scale)
        perturbed_loss = self._grad_pass(closure, clean=False)
        g_k = self._grads(ps)
        gk_norm = self._norm(g_k)
        disp_norm = disp_scale * (grad_norm if self.steps == 1 else self._norm(disp))
        cos = (disp_scale * self._dot(disp, g_k) / ((disp_norm + self.eps) * (gk_norm + self.eps))).clamp(-1.0, 1.0)
        return dict(grad_norm=grad_norm, disp=disp, unit_v0=disp_scale / (disp_norm + self.eps), g_k=g_k,
                    gk_norm=gk_norm, cos=cos, phi=torch.arccos(cos), perturbed_loss=perturbed_loss)

    def _sharpness_step(self, closure: Closure):
        searched = self._search_due()
        if self._group == 0:
            self._alpha_before_search = self.alpha
        apart = searched and self.search_closure is not None
        if apart:
            self.alpha = self._search_apart(self.search_closure)
        loss = self._grad_pass(closure, clean=True)
        ps = self._active()
        theta0 = self._save_weights(ps)
        a = self._ascend(closure, ps)
        if searched and not apart:
            self.alpha = self._search(closure, ps, theta0, a)
        self._restore_weights(ps)

        g_k = a["g_k"]
        if self.alpha != 1.0:  # alpha* = 1 is d = g_k exactly (k-step SAM): nothing to do
            c0, c1 = slerp_coefficients(self.alpha, a["phi"])
            # d = ||g_k|| (c0 v0 + c1 v1) = c1 g_k + c0 ||g_k|| unit_v0 disp, in place
            torch._foreach_mul_(g_k, c1)
            self._add_scaled_(g_k, a["disp"], c0 * a["gk_norm"] * a["unit_v0"])
        return ps, dict(loss=loss, perturbed_loss=a["perturbed_loss"], grad_norm=self._unscale(a["grad_norm"]),
                        perturbed_grad_norm=self._unscale(a["gk_norm"]), cos=a["cos"], alpha=self.alpha,
                        searched=searched)

    def _search_apart(self, closure: Closure) -> float:
        """alpha* from the search images alone (``search_closure``): their own clean pass, ascent and
        probes from theta_0, as the official code does on its batch. Every rank has the same images and
        weights, so nothing is synchronised; the weights are restored and the gradients cleared."""
        self._same_on_every_rank = True
        try:
            self._grad_pass(closure, clean=False)  # BN frozen: the search images move no running statistics
            ps = self._active()
            theta0 = self._save_weights(ps)
            alpha = self._search(closure, ps, theta0, self._ascend(closure, ps))
            self._restore_weights(ps)
        finally:
            self._same_on_every_rank = False
        self.base_optimizer.zero_grad(set_to_none=True)
        return alpha

    def _search(self, closure, ps, theta0, a: dict) -> float:
        """alpha* = argmax over the grid of f(theta_0 + rho_probe v(alpha)); first maximiser wins. Rank 0's
        probe losses decide for every rank (their mean over ranks under sync_perturbation, where each pass
        is the whole global batch's)."""
        a0 = self.rho_probe * a["unit_v0"].item()
        a1 = self.rho_probe / (a["gk_norm"].item() + self.eps)
        losses = []
        for alpha in self.alpha_grid:
            c0, c1 = (c.item() for c in slerp_coefficients(alpha, a["phi"]))
            torch._foreach_copy_(ps, theta0)
            torch._foreach_add_(ps, a["disp"], alpha=a0 * c0)
            torch._foreach_add_(ps, a["g_k"], alpha=a1 * c1)
            losses.append(self._probe(closure))
        losses = torch.stack(losses)
        if self.sync_perturbation and not self._same_on_every_rank:  # every pass is the whole global batch's
            probe_losses = all_reduce_mean(losses)
        else:
            probe_losses = broadcast_from_first(losses)
        self.last_probe_losses = probe_losses
        # a NaN probe says nothing about the maximum; an overflowing (inf) one is the maximum
        return self.alpha_grid[int(torch.argmax(torch.nan_to_num(probe_losses, nan=float("-inf"))))]

    def _on_skip(self) -> None:
        self.alpha = self._alpha_before_search  # a search on a non-finite step is not kept

    def step(self, closure):
        try:
            stats = super().step(closure)
        finally:
            self.search_next = None
            self.search_closure = None
        if stats.searched and not stats.skipped:
            self.searches += 1
        return stats

    def _extra_state(self) -> dict:
        return {**super()._extra_state(), "alpha": self.alpha, "searches": self.searches}

    def _load_extra_state(self, state: dict) -> None:
        super()._load_extra_state(state)
        self.alpha = state["alpha"]
        self.searches = state["searches"]
