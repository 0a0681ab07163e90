"""MESA, the memory-efficient form of SAF (Du et al., "Sharpness-Aware Training for Free", NeurIPS 2022).

SAF replaces SAM's sharpness by a trajectory loss: the KL divergence between the outputs of the current weights
and of past weights on the same images. SAF keeps every image's past outputs (an N x classes table and the
loader's image indices); MESA takes the past outputs from an exponential moving average of the weights instead,
computed by one extra forward pass. Per step, with logits z = f(w; x) and z_ema = f(w_ema; x) (eval mode, no
gradient), as the official code computes it (github.com/AngusDujw/SAF, MESA_train.py)::

    loss  = CE(z, y) + lam * tau^2 * mean_x KL( softmax(z_ema / tau) || softmax(z / tau) )
    d     = grad loss                                          one forward-backward pass + one forward
    w_ema <- decay w_ema + (1 - decay) w                       after every taken step (timm ModelEmaV2:
                                                               parameters and floating-point buffers)

The KL term applies from step ``start_step`` on (the official --kl_start_epoch, in epochs there); the average
is kept from the first step. lam = 0 (or a step before ``start_step``) is vanilla bit for bit. The step itself is
vanilla's: no perturbation, so h and 2h/rho^2 are not measured (0, as vanilla's); ``loss`` in the StepStats is
the objective above. The term enters through the closure: the trainer's closure adds ``opt.loss_term(logits,
x)`` to each micro-batch's loss before dividing by the accumulation count and before the GradScaler, so
accumulation, fp16 and DDP see it as part of the loss. Memory: the average (one model copy, in the checkpoint).

Under DDP the average needs no collective: the weights it follows are the same on every rank after the
synchronised step. BatchNorm running statistics are not (without SyncBatchNorm each rank's forward updates them
from its own images; DDP broadcasts rank 0's at the next synchronised forward), so with BatchNorm the average's
statistics are each rank's own, and a checkpoint keeps rank 0's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call

from .base import NonNegative
from .vanilla import Vanilla


class MESA(Vanilla):
    """Vanilla's step on CE + lam tau^2 KL(teacher || student), the teacher an EMA of the weights."""

    lam = NonNegative()
    tau = NonNegative()

    def __init__(self, params, base_optimizer, *, model: torch.nn.Module, lam: float = 0.8, tau: float = 5.0,
                 decay: float = 0.9998, start_step: int = 0, **kwargs):
        super().__init__(params, base_optimizer, model=model, **kwargs)
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"decay must be in [0, 1], got {decay!r}")
        if not isinstance(start_step, int) or isinstance(start_step, bool) or start_step < 0:
            raise ValueError(f"start_step must be an integer >= 0, got {start_step!r}")
        self.lam, self.tau, self.decay, self.start_step = lam, tau, float(decay), start_step
        self._net = model.module if self._ddp is not None else model
        self._ema = {k: v.detach().clone() for k, v in self._net.state_dict().items()}

    def _teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        """f(w_ema; x) in eval mode (as timm's ModelEmaV2 module), without touching the model's own state."""
        was_training = self._net.training
        self._net.eval()
        try:
            with torch.no_grad():
                return functional_call(self._net, self._ema, (x,))
        finally:
            self._net.train(was_training)

    def loss_term(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor | None:
        """lam tau^2 mean_x KL(softmax(z_ema/tau) || softmax(z/tau)), from ``start_step`` on."""
        if not self.lam or self.steps_taken + self.steps_skipped < self.start_step:
            return None
        dtype = torch.promote_types(logits.dtype, torch.float32)  # bf16/fp16 logits in float32, float64 kept
        teacher = F.softmax(self._teacher_logits(x).to(dtype) / self.tau, dim=-1)
        log_student = F.log_softmax(logits.to(dtype) / self.tau, dim=-1)
        kl = F.kl_div(log_student, teacher, reduction="none").sum(-1).mean()
        return self.lam * self.tau ** 2 * kl

    def step(self, closure):
        stats = super().step(closure)
        if not stats.skipped:
            self._update_average()
        return stats

    @torch.no_grad()
    def _update_average(self) -> None:
        current = self._net.state_dict()
        floats = [k for k, v in self._ema.items() if v.is_floating_point()]
        torch._foreach_lerp_([self._ema[k] for k in floats], [current[k] for k in floats], 1.0 - self.decay)
        others = [k for k in self._ema if k not in set(floats)]  # e.g. BatchNorm's num_batches_tracked
        if others:
            torch._foreach_copy_([self._ema[k] for k in others], [current[k] for k in others])

    def _extra_state(self) -> dict:
        return {**super()._extra_state(), "lam": self.lam, "tau": self.tau, "decay": self.decay,
                "start_step": self.start_step, "ema": self._ema}

    def _load_extra_state(self, state: dict) -> None:
        super()._load_extra_state(state)
        self.lam, self.tau, self.decay = state["lam"], state["tau"], state["decay"]
        self.start_step = state["start_step"]
        if state["ema"].keys() != self._ema.keys():
            raise ValueError("the saved MESA average does not match the model's state_dict keys")
        for k, v in state["ema"].items():
            self._ema[k].copy_(v)
