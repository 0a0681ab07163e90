"""Checks of the composed config and the numbers derived from it, each error one line naming the key. A method's
keys and checks are its registration's (gsam/optim/methods.py): the numeric keys and the per-method checks here
derive from the registry."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import torch

from gsam.optim.factory import BASES
from gsam.optim.registry import METHODS, is_int, is_number


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


# the numeric keys outside the methods' sections; every method's numeric keys join them (``numeric_keys``)
NUMERIC = ("seed", "optimizer.lr", "optimizer.lr_min", "optimizer.weight_decay", "schedule.epochs",
           "schedule.warmup_steps", "data.batch_size", "data.num_classes", "train.divergence_factor", "train.progress_every_s")


def numeric_keys() -> tuple[str, ...]:
    """NUMERIC and the numeric keys of every registered method: a key another method reads stays in the config
    of an experiment run with this one (``+experiment=demo_gsam sam=sam``), and must still be a number."""
    sam = {f"sam.{k}": None for m in METHODS.values() for k, key in m.keys.items() if key.numeric}
    return NUMERIC + tuple(sam)


def check_numbers(cfg: Mapping) -> None:
    """The numeric keys are finite numbers: ``sam.alpha=abc`` or ``optimizer.lr=inf`` is named here, before a
    range check or a later computation meets it without its key."""
    for key in numeric_keys():
        *sections, name = key.split(".")
        node = cfg
        for s in sections:
            node = node.get(s) or {}
        value = node.get(name)
        if value is not None and not is_number(value):
            raise ConfigError(f"{key}={value!r}: expected a finite number")


def _needing(cfg: Mapping):
    """``need(key, ok, expected)``: a ConfigError naming ``key`` and its value when not ``ok``."""
    def need(key: str, ok: bool, expected: str) -> None:
        if not ok:
            section, name = key.split(".")
            raise ConfigError(f"{key}={cfg[section].get(name)!r}: {expected}")
    return need


def unresolved(cfg) -> str | None:
    """One line naming the first key whose value does not resolve, or None. An interpolation that reaches into
    another config group (``+experiment=demo_vanilla data=imagenet``: the demo's eval sets read
    ``${data.robustness_root}``, a key only data=demo has) or an unset ``${oc.env:VAR}`` otherwise ended in
    OmegaConf's traceback wherever the key was first read (or in Hydra's own for output_dir). Hydra's own
    section is Hydra's to resolve."""
    from omegaconf import DictConfig, OmegaConf
    from omegaconf.errors import InterpolationKeyError, InterpolationResolutionError

    if not isinstance(cfg, DictConfig):  # a plain mapping (a script's or a test's) has nothing to resolve
        return None
    keys = [k for k in cfg if k != "hydra"]
    try:
        OmegaConf.to_container(OmegaConf.masked_copy(cfg, keys), resolve=True)
    except InterpolationResolutionError as e:
        if "HydraConfig was not set" in str(e):  # ${hydra:...} before Hydra's job starts (its callback): Hydra's to
            return None                          # resolve; train.py's own check, inside the job, sees the rest
        reason = str(e).splitlines()[0].replace("KeyError raised while resolving interpolation: ", "").strip('"')
        advice = (f"set it, or override {e.full_key}" if not isinstance(e, InterpolationKeyError) else
                  "a key that the config groups chosen do not define: choose the group that defines it, or set it "
                  "with ++KEY=VALUE")
        return f"{e.full_key}: {reason}; {advice}"
    return None


def check(cfg: Mapping) -> None:
    """Fail early, in one line, on values that would otherwise fail late or silently."""
    problem = unresolved(cfg)
    if problem:
        raise ConfigError(problem)
    need = _needing(cfg)
    check_numbers(cfg)
    need("sam.name", cfg["sam"]["name"] in METHODS, f"expected one of {tuple(METHODS)}")
    need("optimizer.name", cfg["optimizer"]["name"] in BASES, f"expected one of {BASES}")
    _check_optimizer(cfg["optimizer"], need)
    _check_schedule_and_model(cfg, need)
    _check_train(cfg.get("train") or {}, need)
    METHODS[cfg["sam"]["name"]].validate(cfg, need)


def _check_optimizer(opt: Mapping, need) -> None:
    need("optimizer.lr", float(opt["lr"]) > 0, "expected > 0")
    need("optimizer.lr_min", 0 <= float(opt["lr_min"]) <= float(opt["lr"]), "expected 0 <= lr_min <= optimizer.lr")
    need("optimizer.weight_decay", float(opt["weight_decay"]) >= 0, "expected >= 0")
    if opt["name"] == "adamw" and opt.get("betas") is not None:
        betas = list(opt["betas"]) if not isinstance(opt["betas"], (str, int, float)) else []
        need("optimizer.betas", len(betas) == 2 and all(is_number(b) and 0 <= b < 1 for b in betas),
             "expected two numbers in [0, 1), e.g. [0.9, 0.999]")


def _check_schedule_and_model(cfg: Mapping, need) -> None:
    need("schedule.epochs", int(cfg["schedule"]["epochs"]) > 0, "expected > 0")
    need("schedule.warmup_steps", int(cfg["schedule"]["warmup_steps"]) >= 0, "expected >= 0")
    need("schedule.decay", cfg["schedule"]["decay"] in ("linear", "cosine", "constant"),
         "expected linear, cosine or constant")
    need("model.loss", cfg["model"]["loss"] in ("softmax", "sigmoid"), "expected softmax or sigmoid")
    size = (cfg.get("data") or {}).get("img_size")
    need("data.img_size", size is None or is_int(size) and size >= 1,
         "expected an integer >= 1 (the side of the square images the model sees)")


def _check_train(train: Mapping, need) -> None:
    _check_train_counts(train)
    need("train.progress_every_s", train.get("progress_every_s") is None or float(train["progress_every_s"]) >= 0,
         "expected seconds >= 0 between progress lines in a log (0: a line every step)")
    need("train.resume", train.get("resume", True) in (True, False, "allow_changes", "restart"),
         "expected true (continue the run in output_dir), false (a fresh run: an empty folder), allow_changes or "
         "restart (move the folder's run into previous-<time>/ and start afresh)")
    compile_ = train.get("compile", False)
    if not isinstance(compile_, bool):
        import torch._dynamo

        need("train.compile", compile_ in torch._dynamo.list_backends(exclude_tags=()),
             "expected true, false or a torch.compile backend (e.g. inductor, aot_eager)")


def _check_train_counts(train: Mapping) -> None:
    """The loop divides by these (``step % log_every``): 0 would end the run after its first step or epoch, and a
    negative period would silently act as its absolute value."""
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
    # refused rather than read as "no limit" (some frameworks' -1): null already says that, and 0 or -1 ran no
    # step at all and still wrote results.json and a top-k checkpoint of the initial weights
    steps = train.get("max_steps")
    if steps is not None and not (is_int(steps) and steps >= 1):
        raise ConfigError(f"train.max_steps={steps!r}: expected an integer >= 1 (the step to stop after), or null "
                          "for the whole schedule")
