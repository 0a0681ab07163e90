"""The parts of a run, from its composed config, by the one path that training and evaluation share.

``start`` checks the config and joins the process group; ``build`` makes the model (seeded, on the device, in
its memory format), the data (its class count checked against ``data.num_classes``), the loss and the
evaluation sets; ``build_training`` adds what only training needs: the forward the loop calls (DDP, compile),
the optimizer, the fp16 grad scaler and the step schedule.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from omegaconf import DictConfig
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from gsam import failsafe
from gsam.config.checks import BatchPlan, ConfigError, amp_dtype, batch_plan, check, is_int
from gsam.config.keys import check_known_keys
from gsam.distributed import DistInfo, barrier, init_distributed, seed_everything
from gsam.run.engine import StepPlan, loss_function
from gsam.optim.factory import build_optimizer
from gsam.optim.registry import method


@dataclasses.dataclass
class Parts:
    """What training and evaluation both use."""

    info: DistInfo
    model: nn.Module  # the weights, unwrapped: checkpoints, the optimizer and evaluate.py use this one
    data: object  # gsam.data.build.DataParts: train loader, eval loaders, classes, eval files
    loss_fn: Callable
    eval_sets: dict  # {name: evaluator} (gsam/evaluation/sets.py)
    amp: torch.dtype | None
    channels_last: bool


@dataclasses.dataclass
class Training:
    """What only training adds to the parts."""

    forward: nn.Module  # what the loop calls: the model under DDP and/or torch.compile
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    plan: StepPlan


def start(cfg: DictConfig) -> DistInfo:
    """The config's checks (one line naming the key), then this process's place in the process group, watched by
    the other ranks (gsam/failsafe.py: a rank that fails ends them all)."""
    check(cfg)
    check_known_keys(cfg)
    info = init_distributed(cfg.train.device)
    if info.world > 1:
        failsafe.RankWatch.start(info.rank)
    return info


def _build_model(cfg: DictConfig):
    """The model of ``model.*``; a name timm does not know (or a bad head option) is a ConfigError naming it."""
    from gsam import models

    try:
        return models.build_model(cfg.model, num_classes=int(cfg.data.num_classes))
    except (ValueError, TypeError) as e:  # unknown name, unknown or mistyped timm kwargs
        raise ConfigError(f"model: {e}") from e


def _build_data(cfg: DictConfig, info: DistInfo, batches: BatchPlan, norm: dict, channels_last: bool):
    from gsam.data.build import build_data

    try:
        return build_data(cfg.data, seed=int(cfg.seed), rank=info.rank, world=info.world, is_main=info.main,
                          per_rank_batch=batches.per_rank, device=info.device, channels_last=channels_last,
                          mean=norm["mean"], std=norm["std"], barrier=barrier,
                          allow_partial=bool(cfg.eval.get("allow_partial", False)))
    except (FileNotFoundError, ImportError, ValueError) as e:
        raise ConfigError(str(e)) from e


def _channels_last(cfg: DictConfig) -> bool:
    """``auto``: the model's own ``model.channels_last`` (its file says why)."""
    auto = cfg.train.channels_last == "auto" and cfg.model.get("channels_last") is True
    return cfg.train.channels_last is True or auto


def build(cfg: DictConfig, info: DistInfo, batches: BatchPlan) -> Parts:
    """Model, data, loss and evaluation sets; ``batches`` sets the training loader's per-process batch."""
    from gsam import models

    from gsam.evaluation.sets import build_eval_sets

    seed_everything(int(cfg.seed), info.rank)  # the model's initial weights, dropout, stochastic depth
    amp = amp_dtype(cfg.train.amp, info.device)
    model = _build_model(cfg)
    norm = models.model_data_config(model)
    channels_last = _channels_last(cfg)
    data = _build_data(cfg, info, batches, norm, channels_last)
    if len(data.classes) != int(cfg.data.num_classes):  # the head would not match the labels
        raise ConfigError(f"data.num_classes={cfg.data.num_classes} but the data has {len(data.classes)} classes")
    model.to(info.device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    loss_fn = loss_function(cfg.model.loss, len(data.classes))
    eval_sets = build_eval_sets(cfg, classes=data.classes, loaders=data.evals, files=data.files, loss_fn=loss_fn,
                                mean=norm["mean"], std=norm["std"], rank=info.rank, world=info.world,
                                notice=print if info.main else lambda *_: None)
    return Parts(info, model, data, loss_fn, eval_sets, amp, channels_last)


def _compiled(model, setting):
    """``train.compile``: false, true (inductor) or the name of a torch.compile backend (e.g. aot_eager, which
    traces and differentiates as inductor does without generating code: the kit's CPU rehearsal uses it)."""
    if setting is False or setting is None:
        return model
    return torch.compile(model) if setting is True else torch.compile(model, backend=str(setting))


def training_batches(cfg: DictConfig, world: int) -> BatchPlan:
    """The run's batches on ``world`` processes: sam.m's perturbation groups (vanilla: none), forward passes of
    at most data.max_device_batch images, and exactly model.bn_images when set, so that BatchNorm normalises
    over that many images whatever the number of processes and whatever the method."""
    m = cfg.sam.get("m") if method(cfg.sam.name).perturbs else None  # vanilla, MESA: nothing to perturb
    cap, bn = cfg.data.max_device_batch, cfg.model.get("bn_images")
    if bn is not None:
        if not is_int(bn) or bn <= 0 or (m and m % bn):
            raise ConfigError(f"model.bn_images={bn!r}: expected a positive number of images that divides sam.m={m}")
        cap = bn if cap is None else min(int(cap), bn)
    plan = batch_plan(int(cfg.data.batch_size), world, cap, m)
    if bn is not None and plan.micro != bn:
        raise ConfigError(f"model.bn_images={bn}: BatchNorm would see {plan.micro} images per forward (the "
                          f"per-process batch is {plan.per_rank}, data.max_device_batch={cfg.data.max_device_batch})")
    return plan


def step_plan(cfg: DictConfig, batches: BatchPlan, parts: Parts) -> StepPlan:
    """The schedule over ``schedule.epochs`` of the training loader, and where ``train.max_steps`` stops it."""
    total = int(cfg.schedule.epochs) * len(parts.data.train)
    cap = cfg.data.get("max_device_batch")
    return StepPlan(total_steps=total, stop_step=min(int(cfg.train.max_steps or total), total),
                    warmup_steps=min(int(cfg.schedule.warmup_steps), total), lr_max=float(cfg.optimizer.lr),
                    lr_min=float(cfg.optimizer.lr_min), decay=cfg.schedule.decay, accum=batches.accum,
                    amp_dtype=parts.amp, max_bad_steps=int(cfg.train.max_bad_steps), log_every=int(cfg.train.log_every),
                    checkpoint_every=int(cfg.train.checkpoint_every_steps), channels_last=parts.channels_last,
                    groups=batches.groups, max_forward=int(cap) if cap else None)


def build_training(cfg: DictConfig, parts: Parts, batches: BatchPlan) -> Training:
    """DDP over several processes, torch.compile when asked, the optimizer, the fp16 grad scaler, the schedule."""
    info = parts.info
    ddp = None
    if info.world > 1:
        ddp = DistributedDataParallel(parts.model,
                                      device_ids=[info.local_rank] if info.device.type == "cuda" else None)
    scaler = torch.amp.GradScaler(info.device.type) if parts.amp == torch.float16 else None
    # the optimizer gets the DDP object itself (no_sync, BN layers), not the compiled wrapper
    opt = build_optimizer(parts.model, cfg.optimizer, cfg.sam, wrapper=ddp, grad_scaler=scaler)
    return Training(_compiled(ddp or parts.model, cfg.train.compile), opt, scaler, step_plan(cfg, batches, parts))
