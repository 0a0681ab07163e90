"""Checks of the composed config and the numbers derived from it, each error one line naming the key."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import torch

from gsam.optim.factory import BASES, METHODS


class ConfigError(ValueError):
    """A wrong config value; the message names the key and says what is expected."""


@dataclasses.dataclass(frozen=True)
class BatchPlan:
    global_batch: int
    per_rank: int  # images per rank per optimisation step
    micro: int  # images per forward/backward
    accum: int  # micro-batches per perturbation group
    groups: int = 1  # perturbation groups per rank per step
    m: int = 0  # images per perturbation group (per_rank when sam.m is null)


def batch_plan(global_batch: int, world: int, max_device_batch: int | None, m: int | None = None) -> BatchPlan:
    """Global batch -> per-rank batch, perturbation groups of ``m`` images (``sam.m``; None = the
    whole per-rank batch) and micro-batches within a group; anything that does not divide is an error."""
    if global_batch <= 0:
        raise ConfigError(f"data.batch_size must be positive, got {global_batch}")
    if global_batch % world:
        raise ConfigError(f"data.batch_size={global_batch} is not divisible by the number of processes ({world})")
    per_rank = global_batch // world
    m = per_rank if m is None else m
    if per_rank % m:
        raise ConfigError(f"sam.m={m} does not divide the per-process batch {per_rank} "
                          f"(data.batch_size={global_batch} over {world} processes)")
    micro = min(m, max_device_batch or m)
    if micro <= 0 or m % micro:
        raise ConfigError(f"data.max_device_batch={max_device_batch} does not divide the perturbation group of "
                          f"{m} images (sam.m; the per-process batch is {per_rank}: data.batch_size={global_batch} "
                          f"over {world} processes)")
    return BatchPlan(global_batch, per_rank, micro, m // micro, per_rank // m, m)


def amp_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """``auto``: bf16 on GPU, fp32 on CPU."""
    choices = {"auto": torch.bfloat16 if device.type == "cuda" else None, "bf16": torch.bfloat16,
               "fp16": torch.float16, "none": None}
    if setting not in choices:
        raise ConfigError(f"train.amp must be one of {sorted(choices)}, got {setting!r}")
    return choices[setting]


def check(cfg: Mapping) -> None:
    """Fail early, in one line, on values that would otherwise fail late or silently."""
    def need(key: str, ok: bool, expected: str):
        if not ok:
            section, name = key.split(".")
            raise ConfigError(f"{key}={cfg[section].get(name)!r}: {expected}")

    from gsam.config.numbers import check_numbers

    check_numbers(cfg)

    need("sam.name", cfg["sam"]["name"] in METHODS, f"expected one of {METHODS}")
    need("optimizer.name", cfg["optimizer"]["name"] in BASES, f"expected one of {BASES}")
    need("optimizer.lr", float(cfg["optimizer"]["lr"]) > 0, "expected > 0")
    need("optimizer.lr_min", 0 <= float(cfg["optimizer"]["lr_min"]) <= float(cfg["optimizer"]["lr"]),
         "expected 0 <= lr_min <= optimizer.lr")
    need("optimizer.weight_decay", float(cfg["optimizer"]["weight_decay"]) >= 0, "expected >= 0")
    if cfg["optimizer"]["name"] == "adamw" and cfg["optimizer"].get("betas") is not None:
        betas = list(cfg["optimizer"]["betas"]) if not isinstance(cfg["optimizer"]["betas"], (str, int, float)) else []
        need("optimizer.betas", len(betas) == 2 and all(isinstance(b, (int, float)) and not isinstance(b, bool)
                                                           and 0 <= b < 1 for b in betas),
             "expected two numbers in [0, 1), e.g. [0.9, 0.999]")
    need("schedule.epochs", int(cfg["schedule"]["epochs"]) > 0, "expected > 0")
    need("schedule.warmup_steps", int(cfg["schedule"]["warmup_steps"]) >= 0, "expected >= 0")
    need("schedule.decay", cfg["schedule"]["decay"] in ("linear", "cosine", "constant"),
         "expected linear, cosine or constant")
    need("model.loss", cfg["model"]["loss"] in ("softmax", "sigmoid"), "expected softmax or sigmoid")
    _check_train_counts(cfg.get("train") or {})
    need("train.resume", (cfg.get("train") or {}).get("resume", True) in (True, False, "allow_changes", "restart"),
         "expected true (continue the run in output_dir), false (a fresh run: an empty folder), allow_changes or "
         "restart (move the folder's run into previous-<time>/ and start afresh)")
    compile_ = (cfg.get("train") or {}).get("compile", False)
    if not isinstance(compile_, bool):
        import torch._dynamo

        need("train.compile", compile_ in torch._dynamo.list_backends(exclude_tags=()),
             "expected true, false or a torch.compile backend (e.g. inductor, aot_eager)")
    if cfg["sam"]["name"] not in ("none", "mesa"):  # MESA perturbs nothing: no rho, no groups
        rmax, rmin = float(cfg["sam"]["rho_max"]), float(cfg["sam"]["rho_min"])
        need("sam.rho_min", 0 <= rmin <= rmax, "expected 0 <= sam.rho_min <= sam.rho_max")
        m = cfg["sam"].get("m")
        need("sam.m", m is None or (is_int(m) and m > 0),
             "expected null (the whole per-process batch) or an integer > 0 (images per perturbation group)")
    if cfg["sam"]["name"] in ("gsam", "gsam_min_f"):
        need("sam.alpha", float(cfg["sam"]["alpha"]) >= 0, "expected >= 0")
        _warn_large_alpha(float(cfg["sam"]["alpha"]))
    if cfg["sam"]["name"] in ("weighted_gap", "mesa"):
        need("sam.lam", float(cfg["sam"]["lam"]) >= 0, "expected >= 0")
    if cfg["sam"]["name"] == "mesa":
        need("sam.tau", float(cfg["sam"]["tau"]) > 0, "expected > 0 (the temperature of the KL term)")
        need("sam.decay", 0 <= float(cfg["sam"]["decay"]) <= 1, "expected 0 <= decay <= 1")
        start = cfg["sam"]["start_step"]
        need("sam.start_step", is_int(start) and start >= 0, "expected an integer >= 0")
    if cfg["sam"]["name"] in ("every_k", "looksam", "lookgsam"):
        k = cfg["sam"]["k"]
        need("sam.k", is_int(k) and k >= 1,
             "expected an integer >= 1 (the full sharpness-aware step every k steps)")
    if cfg["sam"]["name"] in ("looksam", "lookgsam"):
        need("sam.alpha", float(cfg["sam"]["alpha"]) >= 0, "expected >= 0")
    if cfg["sam"]["name"] == "lookgsam":
        need("sam.gsam_alpha", float(cfg["sam"]["gsam_alpha"]) >= 0, "expected >= 0")
    if cfg["sam"]["name"] == "xsam":
        need("sam.steps", int(cfg["sam"]["steps"]) >= 1, "expected an integer >= 1")
        need("sam.search_every_epochs", int(cfg["sam"]["search_every_epochs"]) >= 0, "expected >= 0 (0 = never)")
        need("sam.rho_probe", float(cfg["sam"]["rho_probe"]) >= 0, "expected >= 0")
        _warn_xsam_radii(float(cfg["sam"]["rho_max"]), float(cfg["sam"]["rho_probe"]))


def is_int(value) -> bool:
    """An integer as YAML or the command line gives it (True/False are bools, not counts)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _check_train_counts(train: Mapping) -> None:
    """The loop divides by these (``step % log_every``): 0 ended the run after its first step or epoch, and a
    negative period silently acted as its absolute value."""
    periods = {"log_every": "steps between logged records", "eval_every_epochs": "epochs between evaluations; a "
               "value above schedule.epochs evaluates at the end only", "checkpoint_every_steps": "steps between "
               "checkpoints of last.pt"}
    for name, what in periods.items():
        value = train.get(name)
        if name in train and not (is_int(value) and value >= 1):
            raise ConfigError(f"train.{name}={value!r}: expected an integer >= 1 ({what})")
    for name, least in {"keep_top_k": 0, "keep_previous": 0, "max_bad_steps": 1}.items():
        value = train.get(name)
        if name in train and not (is_int(value) and value >= least):
            raise ConfigError(f"train.{name}={value!r}: expected an integer >= {least}")


def _warn_large_alpha(alpha: float) -> None:
    """GSAM's alpha scales the ascent on the orthogonal gradient (Eq. 6: g_p - alpha g_perp). The paper allows any
    real value but searched {0.01, 0.02, 0.03} (ResNets) and {0.1, 0.2, 0.3} (ViTs); alpha >= 1 ascends along
    g_perp at least as fast as it descends, most likely a value meant as a percentage, so it is said once."""
    if alpha >= 1:
        import warnings

        warnings.warn(f"sam.alpha={alpha} >= 1: GSAM's ascent on g_perp at least as long as its descent step; the "
                      "paper's values are 0.01-0.3 (docs/optimizers.md)", stacklevel=2)


def _warn_xsam_radii(rho_max: float, rho_probe: float) -> None:
    """The official XSAM flags are named the other way round (its --rho is our sam.rho_max, its --rho_max our
    sam.rho_probe), and its recipe probes at twice the ascent length. A probe inside the ascent radius is allowed
    but is what a ported command with the two names swapped looks like, so it is said once, in one line."""
    if rho_probe < rho_max:
        import warnings

        warnings.warn(f"sam.rho_probe={rho_probe} < sam.rho_max={rho_max}: XSAM probes inside its ascent radius. "
                      "The official --rho is our sam.rho_max and the official --rho_max is our sam.rho_probe "
                      "(docs/optimizers.md)", stacklevel=2)
