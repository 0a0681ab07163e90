"""The trainer's hook (``analysis.every_n_epochs``): sigma_max and h on a fixed set of training batches
after every N-th epoch, logged as kind "analysis" (metrics.jsonl and wandb)."""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .core import Criterion
from .gap import surrogate_gap
from .hessian import dominant_eigenvalue


class SharpnessMonitor:
    """Measures the bare model (never the DDP or compiled wrapper) in fp32 and eval mode on this
    rank's first ``batches`` training batches of epoch 0 (collected once, on first use, without
    touching the training's random streams); every rank takes part and logs the same numbers."""

    def __init__(self, cfg: Mapping, model: nn.Module, train_loader, criterion: Criterion, device: torch.device,
                 rho: float):
        self.every = int(cfg["every_n_epochs"])
        self.n_batches = int(cfg["batches"])
        self.iters = int(cfg["power_iters"])
        self.tol = float(cfg["tol"])
        self.seed = int(cfg.get("seed", 0))
        self.rho = float(cfg["rho"]) if cfg.get("rho") is not None else rho
        if self.n_batches < 1 or self.iters < 1 or not self.rho > 0:
            raise ValueError("analysis.batches and analysis.power_iters must be >= 1 and the radius "
                             f"(analysis.rho or sam.rho_max) > 0; got {self.n_batches}, {self.iters}, {self.rho}")
        self.model, self.loader, self.criterion, self.device = model, train_loader, criterion, device
        self._batches: list | None = None

    def due(self, epoch: int) -> bool:
        return epoch > 0 and epoch % self.every == 0

    def _fixed_batches(self) -> list:
        if self._batches is None:
            self._batches = []
            with torch.random.fork_rng(devices=[]):  # DataLoader draws its base seed from the global RNG
                self.loader.sampler.set_epoch(0)
                for x, y in self.loader:
                    self._batches.append((x.to(self.device), y.to(self.device)))
                    if len(self._batches) == self.n_batches:
                        break
        return self._batches

    def measure(self) -> dict:
        batches = self._fixed_batches()
        eig = dominant_eigenvalue(self.model, self.criterion, batches, iters=self.iters, tol=self.tol, seed=self.seed)
        gap = surrogate_gap(self.model, self.criterion, batches, self.rho)
        return {"sigma_max": eig.eigenvalue, "power_iters": eig.iterations, "converged": eig.converged,
                **gap.as_dict()}


def sharpness_monitor(cfg, model: nn.Module, train_loader, criterion: Criterion, device: torch.device
                      ) -> SharpnessMonitor | None:
    """None when ``analysis.every_n_epochs`` is 0 or absent (the default: off)."""
    a = cfg.get("analysis")
    if a is None or not int(a.get("every_n_epochs", 0) or 0):
        return None
    if int(a["every_n_epochs"]) < 0:
        raise ValueError(f"analysis.every_n_epochs must be >= 0 (0 = off), got {a['every_n_epochs']}")
    rho = float(cfg.sam.get("rho_max", 0.0) or 0.0) or 0.05
    return SharpnessMonitor(a, model, train_loader, criterion, device, rho)
