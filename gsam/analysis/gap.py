"""The surrogate gap h = f_p - f (Eq. 4) and its sharpness estimate 2h/rho^2 (Lemma 3.3), measured
over a fixed set of batches, with cos(grad f, grad f_p) (the angle theta of Fig. 2 / Fig. 8)."""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import nn

from .core import Batch, Criterion, check_batches, dot, eval_mode, mean_loss_and_grad, norm, trainable, \
    weights_restored


@dataclasses.dataclass
class Gap:
    rho: float
    loss: float  # f(w)
    perturbed_loss: float  # f_p(w) = f(w + rho g/||g||)
    surrogate_gap: float  # h = f_p - f (Eq. 4)
    sharpness: float  # 2h/rho^2, ~ sigma_max (Lemma 3.3)
    cos: float  # cos(grad f, grad f_p)
    grad_norm: float
    perturbed_grad_norm: float

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def surrogate_gaps(model: nn.Module, criterion: Criterion, batches: Sequence[Batch], rhos: Sequence[float]
                   ) -> list[Gap]:
    """h(w) for each radius in ``rhos``; f and grad f are computed once.

    w_adv = w + rho g/||g|| is the first-order maximiser of Eq. 4 (Algorithm 1, step 1), with g the
    gradient of the mean loss over all the batches (all ranks'), not a per-batch one. By Taylor,
    2h/rho^2 = 2||g||/rho + g^T H g/||g||^2 + O(rho): it approximates sigma_max (Lemma 3.3) only
    near a minimum (||g|| << rho sigma_max) and when g lies along the top eigenvector of H.
    Eval mode (deterministic), weights restored bit for bit.
    """
    batches = check_batches(batches)
    rhos = [float(r) for r in rhos]
    if not rhos or any(not r > 0 for r in rhos):
        raise ValueError(f"rhos must be a non-empty list of radii > 0, got {rhos}")
    params = trainable(model)
    out = []
    with eval_mode(model):
        loss, g = mean_loss_and_grad(model, criterion, batches, params)
        g_norm = norm(g)
        if g_norm == 0:
            raise ValueError("grad f = 0 on these batches: the perturbation direction g/||g|| is undefined")
        for rho in rhos:
            with weights_restored(params), torch.no_grad():
                for p, gi in zip(params, g):
                    p.add_(gi, alpha=rho / g_norm.item())
                loss_p, g_p = mean_loss_and_grad(model, criterion, batches, params)
            gp_norm = norm(g_p)
            h = (loss_p - loss).item()
            out.append(Gap(rho=rho, loss=loss.item(), perturbed_loss=loss_p.item(), surrogate_gap=h,
                           sharpness=2 * h / rho**2, cos=(dot(g, g_p) / (g_norm * gp_norm)).item(),
                           grad_norm=g_norm.item(), perturbed_grad_norm=gp_norm.item()))
    return out


def surrogate_gap(model: nn.Module, criterion: Criterion, batches: Sequence[Batch], rho: float) -> Gap:
    """h = f_p - f at radius ``rho`` (Eq. 4); see ``surrogate_gaps``."""
    return surrogate_gaps(model, criterion, batches, [rho])[0]
