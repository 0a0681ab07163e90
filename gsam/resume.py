"""Resuming a run: the checkpoint's config against the current one, then the saved state put back.

The keys that define a run (model, method, hyper-parameters, data, seed) must match the checkpoint's, or the
run refuses and names the keys that differ: resuming with other values used to keep the old ones silently
(the optimizer's saved hyper-parameters won) while config.yaml recorded the new. ``train.resume=allow_changes``
resumes anyway, logs each change, and puts the new values into effect. Operational keys (train.*, logger,
eval, analysis, workers, paths, device batch) may change freely.
"""
from __future__ import annotations

from collections.abc import Mapping

from .config import ConfigError

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
    opt.load_state_dict(saved)
    for group, built in zip(opt.param_groups, groups):
        group.update(built)
    for key in {k.split(".", 1)[1] for k in changes if k.startswith("sam.")} & fresh.keys():
        setattr(opt, key, fresh[key])


def restore(resumed: dict, model, opt, scaler, info, changes: Mapping):
    """Put the checkpoint back; returns its loop state. The RNG streams only when the number of processes is
    the same (each rank has its own)."""
    from .distributed import set_rng_state
    from .engine import LoopState

    model.load_state_dict(resumed["model"])
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
