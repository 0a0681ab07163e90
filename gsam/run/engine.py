"""The training loop: one epoch of steps (schedule, SAM closures, bad-step and divergence checks, logging and
checkpoint calls). The epochs around it are gsam/run/experiment.py's, the evaluation passes gsam/evaluation/metrics.py's."""
from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F

from gsam.optim import SharpnessAware, StepClock, lr_at
from gsam.optim.comm import global_batch_head, world_size


@dataclasses.dataclass
class LoopState:
    """Where the run is; saved in every checkpoint."""

    step: int = 0  # optimisation steps done
    epoch: int = 0
    batch_in_epoch: int = 0
    bad_steps_in_a_row: int = 0
    bad_steps_total: int = 0


@dataclasses.dataclass
class StepPlan:
    """Per-step schedule and the numbers the closure needs; the method's own schedule is the method's."""

    total_steps: int  # the schedule's length: schedule.epochs x steps per epoch
    stop_step: int  # the run stops after this step: train.max_steps, at most total_steps
    warmup_steps: int
    lr_max: float
    lr_min: float
    decay: str
    accum: int  # micro-batches per perturbation group
    amp_dtype: torch.dtype | None
    max_bad_steps: int
    log_every: int
    checkpoint_every: int
    channels_last: bool = False
    groups: int = 1  # perturbation groups per process (sam.m)
    max_forward: int | None = None  # images per forward pass at most (data.max_device_batch); None: no cap


def loss_function(kind: str, num_classes: int) -> Callable:
    if kind == "softmax":
        return F.cross_entropy
    if kind == "sigmoid":  # big_vision sigmoid_xent: summed over classes, mean over the batch
        def sigmoid_xent(logits, labels):
            onehot = F.one_hot(labels, num_classes).to(logits.dtype)
            return F.binary_cross_entropy_with_logits(logits, onehot, reduction="none").sum(-1).mean()
        return sigmoid_xent
    raise ValueError(f"model.loss must be 'softmax' or 'sigmoid', got {kind!r}")


def make_closure(model, opt: SharpnessAware, loss_fn, x, y, accum: int, amp_dtype):
    """Forward (+ backward when grad is enabled) over ``accum`` micro-batches; returns the mean loss."""
    xs, ys = x.chunk(accum), y.chunk(accum)

    def closure():
        total = torch.zeros((), device=x.device)
        for i, (xm, ym) in enumerate(zip(xs, ys)):
            # under DDP only the last micro-batch synchronises (the accumulated sum). DDP decides at the forward
            # whether the backward all-reduces, so the forward must be inside no_sync too, not just the backward.
            last = i == accum - 1
            # opt.micro_batch: BatchNorm's running statistics from the first micro-batch only, once per step
            # in every method and on any number of processes (SharpnessAware.micro_batch says why)
            with contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync(), \
                    opt.micro_batch(i):
                with torch.autocast(x.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                    logits = model(xm)
                    loss = loss_fn(logits, ym).float()
                    term = opt.loss_term(logits, xm)  # a method's own term of the loss; None: the loss alone
                    loss = (loss if term is None else loss + term.float()) / accum
                if torch.is_grad_enabled():
                    opt.backward(loss)
            total = total + loss.detach()
        return total

    return closure


def make_closures(model, opt: SharpnessAware, loss_fn, x, y, groups: int, accum: int, amp_dtype) -> list[Callable]:
    """One closure per perturbation group (``groups`` equal slices of the batch), each accumulating
    ``accum`` micro-batches. A method that perturbs nothing has no use for groups: one closure over the
    whole batch (the same mean gradient, and under DDP one synchronisation instead of one per group)."""
    if not opt.perturbs:
        groups, accum = 1, accum * groups
    return [make_closure(model, opt, loss_fn, xg, yg, accum, amp_dtype)
            for xg, yg in zip(x.chunk(groups), y.chunk(groups))]


def head_closure(model, opt: SharpnessAware, loss_fn, x, y, images: int | None, plan: StepPlan) -> Callable:
    """A closure over the first ``images`` of the global batch (None: all of it), gathered on every rank, so that
    a method that asks for them (StepClock.head) sees the same images whatever the number of processes; in
    forward passes of at most ``plan.max_forward`` images."""
    n = x.shape[0] * world_size() if images is None else images
    xs, ys = global_batch_head(x, n), global_batch_head(y, n)
    return make_closure(model, opt, loss_fn, xs, ys, n // min(n, plan.max_forward or n), plan.amp_dtype)


def before_step(model, opt: SharpnessAware, loss_fn, x, y, plan: StepPlan, state: LoopState) -> float:
    """The lr of ``state.step`` into every param group, and the method's one hook with it and the loop's
    counters (its rho_t and any schedule of its own); returns the lr."""
    lr = lr_at(state.step, total_steps=plan.total_steps, warmup_steps=plan.warmup_steps,
               lr_max=plan.lr_max, lr_min=plan.lr_min, decay=plan.decay)
    for g in opt.param_groups:
        g["lr"] = lr
    opt.before_step(StepClock(lr, plan.lr_max, plan.lr_min, state.step, state.epoch, state.batch_in_epoch,
                              head=lambda images: head_closure(model, opt, loss_fn, x, y, images, plan)))
    return lr


def count_step(state: LoopState, stats, plan: StepPlan, divergence) -> None:
    """Advance ``state`` past the step just taken; stop the run (FloatingPointError) after
    ``plan.max_bad_steps`` non-finite steps in a row, or when ``divergence`` sees the loss explode."""
    state.step += 1
    state.batch_in_epoch += 1
    if stats.skipped:
        state.bad_steps_in_a_row += 1
        state.bad_steps_total += 1
        if state.bad_steps_in_a_row >= plan.max_bad_steps:
            raise FloatingPointError(
                f"stopping at step {state.step}: {state.bad_steps_in_a_row} non-finite steps in a row "
                f"(train.max_bad_steps={plan.max_bad_steps})")
    else:
        state.bad_steps_in_a_row = 0
        if divergence is not None:
            divergence.check(state.step, stats.loss)


def train_one_epoch(model, opt: SharpnessAware, loader: Iterable, loss_fn, plan: StepPlan, state: LoopState,
                    device: torch.device, on_log: Callable, on_checkpoint: Callable, progress=None,
                    should_stop: Callable[[], bool] | None = None, divergence=None) -> None:
    """Run the rest of ``state.epoch``, or up to ``plan.stop_step``; ``state`` is advanced after every step and
    told to ``progress`` (gsam/progress.py: TrainProgress), if any.
    ``should_stop`` is asked after every step (on every rank: it may be collective) and ends the epoch early
    when it says so. ``divergence`` (gsam/state/divergence.py) may stop the run on a finite but exploding loss,
    before that step is checkpointed."""
    model.train()
    epoch_len = state.batch_in_epoch + len(loader)  # the loader yields the rest of the epoch
    t_last = time.perf_counter()
    wait = compute = 0.0
    images = 0
    t_data = time.perf_counter()
    for x, y in loader:
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        if plan.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        t_step = time.perf_counter()
        wait += t_step - t_data
        lr = before_step(model, opt, loss_fn, x, y, plan, state)
        stats = opt.step(make_closures(model, opt, loss_fn, x, y, plan.groups, plan.accum, plan.amp_dtype))
        count_step(state, stats, plan, divergence)
        images += x.shape[0]
        t_data = time.perf_counter()
        compute += t_data - t_step
        if progress is not None:
            progress.update(state.step, state.epoch, x.shape[0], stats)
        if state.step % plan.log_every == 0 or state.step == plan.total_steps:
            elapsed = time.perf_counter() - t_last
            metrics = {**stats.as_dict(), "lr": lr, "epoch": state.epoch, "images_per_s": images / max(elapsed, 1e-9),
                       "data_wait": wait / max(wait + compute, 1e-9), "bad_steps": state.bad_steps_total}
            if device.type == "cuda":
                metrics["peak_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
            on_log(state.step, metrics)
            t_last, wait, compute, images = time.perf_counter(), 0.0, 0.0, 0
        if plan.checkpoint_every and state.step % plan.checkpoint_every == 0:
            on_checkpoint()
        if state.step >= plan.stop_step and state.batch_in_epoch < epoch_len:
            return  # stopped inside the epoch; at its last batch the epoch is complete
        if should_stop is not None and should_stop() and state.batch_in_epoch < epoch_len:
            return  # preempted: the caller checkpoints this step boundary
    state.epoch += 1
    state.batch_in_epoch = 0
