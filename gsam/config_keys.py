"""Keys that nothing reads: ``+sam.rhoo=0.1`` composed and trained with the key silently unused. Every key of a
run's config must be defined by some file of ``configs/`` (``model.kwargs`` is timm's own, free-form)."""
from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path

import yaml

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
FREE = ("model.kwargs",)  # passed to timm as they are: timm says which it does not accept


def _paths(node, prefix: str) -> set[str]:
    out = set()
    if isinstance(node, Mapping):
        for k, v in node.items():
            if k == "defaults" and not prefix:
                continue
            path = f"{prefix}.{k}" if prefix else str(k)
            out |= {path} | _paths(v, path)
    return out


def known_keys(configs: Path = CONFIGS) -> set[str]:
    """Dotted paths of every key of every file of ``configs`` (a group's file under its group's name)."""
    known = set()
    for f in configs.rglob("*.yaml"):
        text = f.read_text()
        rel = f.parent.relative_to(configs)
        prefix = "" if "@package _global_" in text or rel == Path(".") else ".".join(rel.parts)
        known |= _paths(yaml.safe_load(text) or {}, prefix)
        known |= {".".join(rel.parts[:i + 1]) for i in range(len(rel.parts))} if prefix else set()  # the group
    return known


def check_known_keys(cfg: Mapping, configs: Path = CONFIGS) -> None:
    """ConfigError naming the first key no file defines, with the closest known key."""
    from omegaconf import OmegaConf

    from .config import ConfigError

    if not configs.is_dir():  # an installed package without the repository's configs/: nothing to compare
        return
    known = known_keys(configs)
    container = OmegaConf.to_container(cfg, resolve=False) if not isinstance(cfg, dict) else cfg
    for key in sorted(_paths(container, "")):
        if key in known or any(key == f or key.startswith(f + ".") for f in FREE):
            continue
        close = difflib.get_close_matches(key, known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"{key}: unknown key, defined by no file of configs/{hint}; it would be ignored")
