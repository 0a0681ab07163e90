"""Build the base optimizer and the method from plain mappings (a Hydra config works; none needed)."""
from __future__ import annotations

from collections.abc import Mapping

import torch

from .base import SharpnessAware
from .registry import method

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
    """The method of ``sam_cfg["name"]`` (gsam/optim/methods.py) over the base optimizer of ``opt_cfg``.
    ``wrapper``: the DDP-wrapped model if any (how the method finds ``no_sync``)."""
    spec = method(sam_cfg["name"])
    base = build_base_optimizer(model, opt_cfg)
    return spec.cls(model.parameters(), base, model=wrapper if wrapper is not None else model,
                    grad_scaler=grad_scaler, max_grad_norm=opt_cfg.get("clip_grad_norm"), **spec.arguments(sam_cfg))
