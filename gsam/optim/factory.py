"""Build the base optimizer and the method from plain mappings (a Hydra config works; none needed)."""
from __future__ import annotations

from collections.abc import Mapping

import torch

from .base import SharpnessAware
from .baselines import GSAMMinF, WeightedGap
from .every_k import EveryK
from .gsam import GSAM
from .looksam import LookSAM
from .mesa import MESA
from .sam import SAM
from .vanilla import Vanilla
from .xsam import XSAM

METHODS = ("none", "sam", "asam", "gsam", "xsam", "weighted_gap", "gsam_min_f", "every_k", "looksam", "lookgsam",
           "mesa")
BASES = ("sgd", "adamw")


# big_vision decays ``.*/kernel$`` only (optax.py, default ``wd_mults``): in flax, "kernel" is the weight of a
# Dense or Conv layer, i.e. of a PyTorch Linear or ConvNd. Not biases, norm scales, pos_embed or tokens.
KERNEL_LAYERS = (torch.nn.Linear, torch.nn.modules.conv._ConvNd)


def param_groups(model: torch.nn.Module, weight_decay: float, decay_norms_and_biases: bool) -> list[dict]:
    """Weight decay on kernels only: the weights of Linear and Conv layers, as big_vision's default
    ``.*/kernel$`` mask; no decay on biases, norm scales, pos_embed or class/register tokens (a ViT's
    pos_embed is a 3-D tensor, so a rule by tensor rank would decay it). ``decay_norms_and_biases``:
    every parameter is decayed instead."""
    kernels = {id(m.weight) for m in model.modules() if isinstance(m, KERNEL_LAYERS) and m.weight is not None}
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if decay_norms_and_biases or id(p) in kernels else no_decay).append(p)
    return [g for g in ({"params": decay, "weight_decay": weight_decay},
                        {"params": no_decay, "weight_decay": 0.0}) if g["params"]]


def build_base_optimizer(model: torch.nn.Module, cfg: Mapping) -> torch.optim.Optimizer:
    groups = param_groups(model, float(cfg["weight_decay"]), bool(cfg.get("decay_norms_and_biases", False)))
    name = cfg["name"]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=float(cfg["lr"]), momentum=float(cfg.get("momentum", 0.9)),
                               nesterov=bool(cfg.get("nesterov", False)))
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=float(cfg["lr"]), betas=tuple(cfg.get("betas", (0.9, 0.999))),
                                 eps=float(cfg.get("eps", 1e-8)))
    raise ValueError(f"optimizer.name must be one of {BASES}, got {name!r}")


def build_optimizer(model: torch.nn.Module, opt_cfg: Mapping, sam_cfg: Mapping, *, wrapper=None,
                    grad_scaler=None) -> SharpnessAware:
    """``wrapper``: the DDP-wrapped model if any (how the method finds ``no_sync``)."""
    base = build_base_optimizer(model, opt_cfg)
    common = dict(model=wrapper if wrapper is not None else model, grad_scaler=grad_scaler,
                  max_grad_norm=opt_cfg.get("clip_grad_norm"))
    name = sam_cfg["name"]
    params = model.parameters()
    if name == "none":
        return Vanilla(params, base, **common)
    if name == "mesa":  # vanilla's step on MESA's loss: the closure adds opt.loss_term (gsam/run/engine.py)
        return MESA(params, base, lam=float(sam_cfg["lam"]), tau=float(sam_cfg["tau"]), decay=float(sam_cfg["decay"]),
                    start_step=int(sam_cfg["start_step"]), **common)
    common["sync_perturbation"] = bool(sam_cfg.get("sync_perturbation", False))
    rho = float(sam_cfg["rho_max"])
    adaptive = bool(sam_cfg.get("adaptive", False))  # ASAM's scale-invariant radius (asam = sam + adaptive)
    if name in ("sam", "asam"):
        return SAM(params, base, rho=rho, adaptive=name == "asam" or adaptive, **common)
    if name == "gsam":
        return GSAM(params, base, rho=rho, alpha=float(sam_cfg["alpha"]), adaptive=adaptive, **common)
    if name == "weighted_gap":
        return WeightedGap(params, base, rho=rho, lam=float(sam_cfg["lam"]), adaptive=adaptive, **common)
    if name == "gsam_min_f":
        return GSAMMinF(params, base, rho=rho, alpha=float(sam_cfg["alpha"]), adaptive=adaptive, **common)
    if name == "every_k":
        return EveryK(params, base, rho=rho, k=int(sam_cfg["k"]), adaptive=adaptive, **common)
    if name in ("looksam", "lookgsam"):  # lookgsam: LookSAM's reuse of GSAM's update (ours)
        return LookSAM(params, base, rho=rho, k=int(sam_cfg["k"]), alpha=float(sam_cfg["alpha"]),
                       gsam_alpha=float(sam_cfg["gsam_alpha"]) if name == "lookgsam" else 0.0, adaptive=adaptive,
                       **common)
    if name == "xsam":  # the trainer schedules the search itself (opt.search_next, sam.search_every_epochs)
        return XSAM(params, base, rho=rho, rho_probe=float(sam_cfg["rho_probe"]), steps=int(sam_cfg.get("steps", 1)),
                    alpha=float(sam_cfg.get("alpha", 1.0)), search_every=int(sam_cfg.get("search_every", 0)), **common)
    raise ValueError(f"sam.name must be one of {METHODS}, got {name!r}")
