"""The methods by name: each one's optimizer class, the keys of its ``configs/sam/<name>.yaml`` with their
defaults, and its checks, declared once. The factory builds from it, the config checks (gsam/config/checks.py)
derive from it, the files ``configs/sam/*.yaml`` are written from it (gsam/config/sam_files.py, with a drift
test), and a new method is its optimizer module plus one ``register`` call (gsam/optim/methods.py for the
shipped ones).

Torch-free on purpose: a check states what it expects through the ``need(key, ok, expected)`` it is given, and
the caller turns a failed one into its own error (a ConfigError naming the key).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping

Need = Callable[[str, bool, str], None]  # need("sam.k", ok, "expected an integer >= 1"): fail when not ok


def is_int(value) -> bool:
    """An integer as YAML or the command line gives it (True/False are bools, not counts)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """A finite int or float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclasses.dataclass(frozen=True)
class Same:
    """A default that is another key's value, e.g. ``rho_min`` = ``rho_max`` (a constant radius); in the YAML
    file the interpolation ``${sam.<key>}``, so that setting the other key moves this one with it."""

    key: str


@dataclasses.dataclass(frozen=True)
class Key:
    """One key of a method's ``configs/sam/<name>.yaml``.

    ``arg``: the optimizer's constructor argument it becomes, through ``to`` (None: another part reads it,
    e.g. ``sam.m`` the batch plan). ``ok(value, sam)`` and ``expected``: its range, the message of a value
    outside it. ``numeric``: a finite number whenever it is set, whatever the method (the config's NUMERIC).
    ``default``: the value of the YAML file, also used when a plain mapping leaves the key out (a script's
    dict), a ``Same`` for another key's value; ``REQUIRED``: no default. ``note``: the comment beside it in the
    file (its meaning, the source of its value; lines split at newlines)."""

    arg: str | None
    to: Callable = float
    ok: Callable[[object, Mapping], bool] | None = None
    expected: str = ""
    numeric: bool = True
    default: object = None
    note: str = ""


REQUIRED = object()


def with_defaults(*parts: Mapping[str, Key], **values) -> dict[str, Key]:
    """The keys of ``parts`` in their order, each key named in ``values`` given that default: a value, or
    ``(value, note)`` to say beside it where the value comes from. A method's defaults are written here, next to
    its keys, so that they have one place (its YAML file is generated from them)."""
    keys = {name: key for part in parts for name, key in part.items()}
    unknown = sorted(set(values) - set(keys))
    if unknown:
        raise KeyError(f"defaults for keys the method does not have: {unknown}")
    for name, value in values.items():
        value, note = value if isinstance(value, tuple) else (value, keys[name].note)
        keys[name] = dataclasses.replace(keys[name], default=value, note=note)
    return keys


def at_least(arg: str | None, least: float, *, default=REQUIRED, note: str = "") -> Key:
    """A number >= ``least``."""
    return Key(arg, float, lambda v, _: v is not None and float(v) >= least, f"expected >= {least:g}{note}",
               default=default)


def integer(arg: str | None, least: int, note: str = "", *, default=REQUIRED) -> Key:
    """An integer >= ``least``."""
    return Key(arg, int, lambda v, _: is_int(v) and v >= least, f"expected an integer >= {least}{note}",
               default=default)


def flag(arg: str, default: bool = False, note: str = "") -> Key:
    return Key(arg, bool, numeric=False, default=default, note=note)


@dataclasses.dataclass(frozen=True)
class Method:
    """A method: its name (``sam.name``), its optimizer class, its keys (all of ``configs/sam/<name>.yaml``
    but ``name``), constructor arguments fixed by the method (``fixed``), its check across keys or sections
    (``check(cfg, need)``), and whether it perturbs (False: perturbation groups and rho do not apply).
    ``summary``: one line for listings (``python -m gsam.catalog``); ``doc``: the comment that opens its YAML
    file (what the method computes, where its values come from)."""

    name: str
    cls: type
    keys: Mapping[str, Key]
    fixed: Mapping[str, object] = dataclasses.field(default_factory=dict)
    check: Callable[[Mapping, Need], None] | None = None
    perturbs: bool = True
    summary: str = ""
    doc: str = ""

    def value(self, name: str, sam: Mapping):
        """``sam.<name>`` as given, else its default (a ``Same`` followed to the key it names)."""
        key = self.keys[name]
        if name not in sam and key.default is REQUIRED:
            raise KeyError(f"sam.{name} is missing (sam.name={self.name})")
        value = sam[name] if name in sam else key.default
        return self.value(value.key, sam) if isinstance(value, Same) else value

    def arguments(self, sam: Mapping) -> dict:
        """The constructor's keyword arguments from the ``sam`` section (a Hydra node or a plain dict)."""
        out = dict(self.fixed)
        for name, key in self.keys.items():
            if key.arg is not None:
                value = self.value(name, sam)
                out[key.arg] = None if value is None else key.to(value)
        return out

    def validate(self, cfg: Mapping, need: Need) -> None:
        """Every key's range, then the method's own check."""
        sam = cfg["sam"]
        for name, key in self.keys.items():
            if key.ok is not None and name in sam:
                need(f"sam.{name}", key.ok(sam[name], sam), key.expected)
        if self.check is not None:
            self.check(cfg, need)


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method`` under its name; a name taken by another method is an error."""
    if method.name in METHODS and METHODS[method.name] is not method:
        raise ValueError(f"a method named {method.name!r} is registered already ({METHODS[method.name].cls})")
    METHODS[method.name] = method
    return method


def unregister(name: str) -> None:
    METHODS.pop(name, None)


def method(name: str) -> Method:
    """The method of ``sam.name``; ValueError listing the registered names."""
    if name not in METHODS:
        raise ValueError(f"sam.name must be one of {tuple(METHODS)}, got {name!r}")
    return METHODS[name]
