"""One run per output folder: a fresh run (``train.resume=false``) into a folder that holds a run is refused,
because the two would mix: the new run's ``step-N`` checkpoints sort before the old run's higher steps and are
deleted at once, the old top-k outranks the new run's, and metrics.jsonl joins the two runs' steps.
``train.resume=restart`` moves the old run into ``previous-<UTC time>/`` inside the folder first."""
from __future__ import annotations

import datetime
import errno
import os
import sys
from pathlib import Path

from hydra.experimental.callback import Callback

from gsam.config.checks import ConfigError

RUN_FILES = ("metrics.jsonl", "summary.csv", "results.json", "checkpoints")
KEPT = (".lock", ".hydra")  # the lock this run holds; Hydra's record of this run's own command
ASIDE = "previous-"


def holds_run(out: Path) -> list[str]:
    """The names of what makes ``out`` hold a run (logs with records, checkpoints, results)."""
    found = []
    for name in RUN_FILES:
        p = out / name
        if p.is_dir() and any(p.iterdir()) or p.is_file() and p.stat().st_size > 0:
            found.append(name)
    return found


def set_aside(out: Path) -> Path:
    """Move everything of the old run (all but the lock, Hydra's files and earlier set-aside runs) into
    ``out/previous-<UTC time>``; returns that folder."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    dest = out / f"{ASIDE}{stamp}"
    dest.mkdir()
    for p in out.iterdir():
        if p.name not in KEPT and not p.name.startswith(ASIDE):
            p.rename(dest / p.name)
    return dest


def prepare_folder(out: Path, policy) -> str | None:
    """Rank 0, holding the folder's lock, before anything there is read: refuse a fresh run over an old one, or
    set the old one aside (``restart``). Returns what was done, for the log."""
    if policy is False or policy == "restart":
        found = holds_run(out)
        if found and policy is False:
            raise ConfigError(f"output_dir={out} holds a run ({', '.join(found)}) and train.resume=false would mix "
                              "the two: train.resume=true to continue it, train.resume=restart to move it into "
                              f"{out}/{ASIDE}<time>/ and start afresh, or another output_dir")
        if found:
            return f"the previous run moved to {set_aside(out)}"
    return None


def output_dir_problem(out: Path) -> str | None:
    """Why ``out`` cannot hold a run, or None: a file, a symbolic link to nothing, or a place nobody can write."""
    try:
        if out.is_symlink() and not out.exists():
            return f"output_dir={out} is a symbolic link to {os.readlink(out)}, which does not exist"
        existing = next(p for p in (out, *out.parents) if p.exists() or p.is_symlink())
    except OSError as e:  # ENAMETOOLONG: a component over the file system's 255 bytes; ELOOP: a cycle of links
        return f"output_dir={out}: {e.strerror}" + (
            " (a folder name over 255 bytes)" if e.errno == errno.ENAMETOOLONG else "")
    if not existing.is_dir():
        return f"output_dir={out}: {existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"output_dir={out}: {existing} is not writable"
    return None


class OutputDirCheck(Callback):
    """Hydra creates ``output_dir`` (its run dir) before the trainer runs, so a folder that cannot be one ended in
    Hydra's traceback. Registered in config.yaml (``hydra.callbacks``), this runs first: one line, exit 2."""

    def on_run_start(self, config, **kwargs) -> None:
        from gsam.config.checks import unresolved

        problem = unresolved(config) or output_dir_problem(Path(str(config.output_dir)))
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            sys.exit(2)
