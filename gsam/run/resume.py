"""Resuming a run: what a checkpoint holds (``snapshot``), the checkpoint's config against the current one,
then the saved state put back (``restore``).

The keys that define a run (model, method, hyper-parameters, data, seed) must match the checkpoint's, or the
run refuses and names the keys that differ: resuming with other values would keep the checkpoint's silently
(the optimizer's saved hyper-parameters win) while config.yaml records the new. ``train.resume=allow_changes``
resumes anyway, logs each change, and puts the new values into effect. Operational keys (train.*, logger,
eval, analysis, workers, paths, device batch) may change freely.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import torch.distributed as dist

from gsam.state.checkpoint import load_weights
from gsam.config.checks import ConfigError
from gsam.distributed import rng_state
from gsam.run.engine import LoopState
from gsam.runlog import truncate_logs

DEFINING = ("seed", "model", "sam", "optimizer", "schedule", "data")
OPERATIONAL = ("data.num_workers", "data.root", "data.betons", "data.os_cache", "data.eval_batch_size",
               "data.robustness_root", "data.max_device_batch")


def flatten(tree, prefix: str = "") -> dict:
    if not isinstance(tree, Mapping):
        return {prefix: tree}
    out = {}
    for k, v in tree.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def config_changes(saved: Mapping, current: Mapping, sections=DEFINING) -> dict:
    """{key: (saved value, current value)} for the run-defining keys that differ (absent = None)."""
    a, b = (flatten({s: c.get(s) for s in sections}) for c in (saved, current))
    keys = [k for k in sorted(a.keys() | b.keys()) if not k.startswith(OPERATIONAL)]
    return {k: (a.get(k), b.get(k)) for k in keys if a.get(k) != b.get(k)}


def check_resume(saved: Mapping, current: Mapping, policy, path) -> dict:
    """The changes, when ``policy`` (train.resume) allows them; ConfigError naming them otherwise."""
    changes = config_changes(saved, current)
    if changes and policy != "allow_changes":
        listed = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changes.items())
        raise ConfigError(f"the config differs from that of {path} in {listed}; rerun with the checkpoint's "
                          "values, another output_dir, or train.resume=allow_changes to resume with the new ones")
    return changes


def load_optimizer(opt, saved: dict, changes: Mapping) -> None:
    """The saved moments and counters; the hyper-parameters of the current config (the param groups as built
    from it, and the method's own values that were changed, e.g. GSAM's alpha)."""
    groups = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    fresh = opt._extra_state()
    if "sam.name" in changes or "optimizer.name" in changes:
        saved = carried_over(opt, saved, fresh, changes)
    opt.load_state_dict(saved)
    for group, built in zip(opt.param_groups, groups):
        group.update(built)
    for key in {k.split(".", 1)[1] for k in changes if k.startswith("sam.")} & fresh.keys():
        setattr(opt, key, fresh[key])


def carried_over(opt, saved: dict, fresh: dict, changes: Mapping) -> dict:
    """What a checkpoint of another method (``sam.name``) or base optimizer (``optimizer.name``) gives this one
    under train.resume=allow_changes: the base optimizer's state (momentum, Adam moments) when it is the same
    base optimizer, the values both methods keep (rho, the step counters), and this method's own values from
    the config (loading a SAM checkpoint into GSAM used to fail on the alpha SAM does not have)."""
    base = saved["base_optimizer"] if "optimizer.name" not in changes else opt.base_optimizer.state_dict()
    return {"base_optimizer": base, "sharpness": {k: saved["sharpness"].get(k, v) for k, v in fresh.items()}}


def restore(resumed: dict, model, opt, scaler, info, changes: Mapping, path=None):
    """Put the checkpoint back; returns its loop state. The RNG streams only when the number of processes is
    the same (each rank has its own)."""
    from gsam.distributed import set_rng_state

    load_weights(model, resumed["model"], path)
    load_optimizer(opt, resumed["optimizer"], changes)
    if scaler is not None and resumed.get("scaler"):
        scaler.load_state_dict(resumed["scaler"])
    if len(resumed["rng"]) == info.world:
        set_rng_state(resumed["rng"][info.rank])
    elif info.main:  # legitimate, but the data order and random streams differ from the saved run
        print(f"[gsam] resuming {len(resumed['rng'])}-process checkpoint on {info.world} processes: "
              "the run continues, not bit for bit")
    if info.main:
        for key, (old, new) in changes.items():
            print(f"[gsam] train.resume=allow_changes: {key} {old!r} -> {new!r}")
    return LoopState(**resumed["loop"])


def _gather_rng() -> list:
    """Every rank's RNG states, in rank order (a collective under DDP)."""
    states = [None] * (dist.get_world_size() if dist.is_initialized() else 1)
    if dist.is_initialized():
        dist.all_gather_object(states, rng_state())
    else:
        states[0] = rng_state()
    return states


def snapshot(model, opt, scaler, state: LoopState, logger, config: dict) -> dict:
    """What ``last.pt`` and the top-k files hold: everything ``restore`` puts back, plus the wandb run id and
    the log position (``resume_from_last``). Every rank takes part: the RNG states are gathered."""
    return {"model": model.state_dict(), "optimizer": opt.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None, "loop": dataclasses.asdict(state),
            "rng": _gather_rng(), "wandb_id": logger.run_id, "config": config, "log": logger.position}


def resume_from_last(policy, checkpoints, config: dict, model, opt, scaler, info, out: Path):
    """(loop state, wandb run id) from ``last.pt`` when there is one and ``policy`` (train.resume) allows it.
    The logs are cut back to the checkpoint, so the steps the resumed run replays are recorded once; without a
    checkpoint the run starts at step 0 and its logs start empty."""
    resumed = checkpoints.resume_state() if policy else None
    if resumed is None:
        if info.main:  # a run that ended before its first checkpoint starts again at step 0: so do its logs
            truncate_logs(out, {"metrics": 0, "summary": 0})
        return LoopState(), None
    changes = check_resume(resumed["config"], config, policy, checkpoints.last)
    state = restore(resumed, model, opt, scaler, info, changes, checkpoints.last)
    if info.main and resumed.get("log"):
        truncate_logs(out, resumed["log"])
    return state, resumed.get("wandb_id")
