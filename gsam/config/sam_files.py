"""``configs/sam/<name>.yaml`` written from the registry (gsam/optim/methods.py), so that a method's defaults have
one place: the optimizer's constructor, a script's plain dict and the composed config all read the same values.

    python -m gsam.config.sam_files             # rewrite this checkout's configs/sam/*.yaml
    python -m gsam.config.sam_files --check     # exit 1 naming each file that differs (the drift test's check)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import gsam.optim  # noqa: F401  (registers the shipped methods)
from gsam.optim.registry import METHODS, REQUIRED, Method, Same

from .keys import CONFIGS

NOTE_COLUMN = 27  # where a key's comment starts: past "sync_perturbation: false", so the notes of a file align


def yaml_value(value) -> str:
    """A default as YAML writes it: null, true/false, the number as Python prints it, ``${sam.<key>}``."""
    if isinstance(value, Same):
        return f"${{sam.{value.key}}}"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    raise TypeError(f"a default must be a number, a bool, null or Same, got {value!r}")


def render(method: Method) -> str:
    """The file of ``method``: its ``doc`` as the opening comment, ``name``, then each key with its default and
    its note (a note's further lines under its first, at the same column)."""
    lines = [f"# {line}".rstrip() for line in method.doc.splitlines()] + [f"name: {method.name}"]
    for name, key in method.keys.items():
        if key.default is REQUIRED:
            raise ValueError(f"sam.{name} of method {method.name!r} has no default to write")
        cell = f"{name}: {yaml_value(key.default)}"
        if not key.note:
            lines.append(cell)
            continue
        width = max(NOTE_COLUMN, len(cell) + 2)
        first, *more = key.note.splitlines()
        lines.append(f"{cell:<{width}}# {first}")
        lines += [f"{'':<{width}}# {line}" for line in more]
    return "\n".join(lines) + "\n"


def drift(configs: Path = CONFIGS) -> list[str]:
    """One line per file of ``configs/sam`` that is not what the registry writes, or that has no method, and per
    shipped method without its file; empty when the two agree."""
    folder = Path(configs) / "sam"
    files = {p.stem: p for p in folder.glob("*.yaml")}
    out = [f"{folder / f'{name}.yaml'}: missing (method {name!r} is registered)" for name in METHODS
           if name not in files]
    for name, path in sorted(files.items()):
        if name not in METHODS:
            out.append(f"{path}: no registered method {name!r}")
        elif path.read_text() != render(METHODS[name]):
            out.append(f"{path}: differs from the registry (gsam/optim/methods.py); "
                       "python -m gsam.config.sam_files rewrites it")
    return out


def write(configs: Path = CONFIGS, names=None) -> list[Path]:
    """Write the file of each method in ``names`` (default: every registered one) into ``configs/sam``."""
    written = []
    for name in names or list(METHODS):
        path = Path(configs) / "sam" / f"{name}.yaml"
        path.write_text(render(METHODS[name]))
        written.append(path)
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", type=Path, default=CONFIGS, help="the configs/ folder (default: this checkout's)")
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file differs")
    args = ap.parse_args(argv)
    if args.check:
        problems = drift(args.configs)
        print("\n".join(problems) or f"{args.configs / 'sam'}: every file is the registry's")
        return 1 if problems else 0
    for path in write(args.configs):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
