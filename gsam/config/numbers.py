"""The numeric keys of the config are numbers, and finite: ``sam.alpha=abc`` used to end in a traceback without
the key, and ``optimizer.lr=inf`` passed the range checks and failed later as "rho must be >= 0, got nan"."""
from __future__ import annotations

import math
from collections.abc import Mapping

NUMERIC = ("seed", "optimizer.lr", "optimizer.lr_min", "optimizer.weight_decay", "schedule.epochs",
           "schedule.warmup_steps", "sam.rho_max", "sam.rho_min", "sam.alpha", "sam.lam", "sam.steps",
           "sam.search_every", "sam.search_every_epochs", "sam.m", "sam.rho_probe", "sam.k", "sam.gsam_alpha",
           "sam.tau", "sam.decay", "sam.start_step", "data.batch_size", "data.num_classes", "train.divergence_factor")


def check_numbers(cfg: Mapping) -> None:
    from gsam.config.checks import ConfigError

    for key in NUMERIC:
        *sections, name = key.split(".")
        node = cfg
        for s in sections:
            node = node.get(s) or {}
        value = node.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{key}={value!r}: expected a finite number")
