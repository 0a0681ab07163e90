"""Keys that nothing reads: ``+sam.rhoo=0.1`` on the command line, or ``sam: {rho_mx: 0.1}`` in a user's own
experiment file, composed and trained with the key silently unused. Every key of a run's config must be declared
by the schema, and only the schema: ``configs/config.yaml`` and the group option files (``configs/model/*.yaml``,
``configs/sam/*.yaml``, ...). The files that only set values (experiments, methods, recipes: ``VALUE_GROUPS``)
declare nothing, so a typo there is not its own justification. ``model.kwargs`` is timm's own, free-form.
The ``sam`` keys are those of every method's file, not only the selected method's: an experiment of one method
run with another (``+experiment=demo_gsam sam=sam``) keeps its values for keys the other method does not read."""
from __future__ import annotations

import difflib
import functools
from collections.abc import Mapping
from pathlib import Path

import yaml

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
FREE = ("model.kwargs", "eval.sets")  # timm checks model.kwargs; gsam/evaluation/sets.py each eval.sets entry
VALUE_GROUPS = ("experiment", "method", "recipe")  # they set the schema's keys; they declare none
# libyaml's safe loader where PyYAML was built with it (about 5x faster than the pure-Python one; same result)
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _paths(node, prefix: str) -> set[str]:
    out = set()
    if isinstance(node, Mapping):
        for k, v in node.items():
            if k == "defaults" and not prefix:
                continue
            path = f"{prefix}.{k}" if prefix else str(k)
            out |= {path} | _paths(v, path)
    return out


def _schema_files(configs: Path):
    """(file, its keys' prefix, its parsed content) of every file that declares keys."""
    for f in sorted(configs.rglob("*.yaml")):
        rel = f.parent.relative_to(configs)
        if rel.parts and rel.parts[0] in VALUE_GROUPS:
            continue
        text = f.read_text()
        prefix = "" if "@package _global_" in text or rel == Path(".") else ".".join(rel.parts)
        yield f, prefix, yaml.load(text, Loader=_SafeLoader) or {}


def known_keys(configs: Path = CONFIGS) -> set[str]:
    """Dotted paths of the keys the schema declares (a group's file under its group's name). Parsed once per state
    of the files (every check of a sweep's or a test session's configs would otherwise re-read some 50 YAML files):
    the cache key holds each file's path, size and modification time, so an edited or added file is re-read."""
    stamp = tuple((str(f), st.st_size, st.st_mtime_ns) for f in sorted(configs.rglob("*.yaml")) for st in [f.stat()])
    return set(_known_keys(configs, stamp))


@functools.lru_cache(maxsize=8)
def _known_keys(configs: Path, stamp: tuple) -> frozenset[str]:
    known = set()
    for f, prefix, content in _schema_files(configs):
        known |= _paths(content, prefix)
        parts = prefix.split(".") if prefix else []
        known |= {".".join(parts[:i + 1]) for i in range(len(parts))}  # the group itself
    return frozenset(known)


def check_known_keys(cfg: Mapping, configs: Path | None = None) -> None:
    """ConfigError naming the first key the schema of ``configs`` (None: CONFIGS, read at the call) does not
    declare, with the closest declared key."""
    from omegaconf import OmegaConf

    from gsam.config.checks import ConfigError

    configs = CONFIGS if configs is None else configs
    if not configs.is_dir():  # an installed package without the repository's configs/: nothing to compare
        return
    container = OmegaConf.to_container(cfg, resolve=False) if not isinstance(cfg, dict) else cfg
    known = known_keys(configs)
    for key in sorted(_paths(container, "")):
        if key in known or any(key == f or key.startswith(f + ".") for f in FREE):
            continue
        close = difflib.get_close_matches(key, known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"{key}: unknown key, declared by no schema file of configs/ (config.yaml, a group's option "
                          f"files){hint}; it would be ignored")
