"""Progress of training and evaluation, fit for where it is read. On a terminal, tqdm bars. Otherwise (a Slurm
log, ``> run.log``, a pipe) bars are carriage-return redraws that pile up in the file (80 kB per 1000 steps of the
demo) and cannot be read or grepped, so a plain line is printed every ``every_s`` seconds instead:

    [gsam] step 1200/93000 (1.3%) epoch 3 | 1523 img/s | loss 6.2130 | rho_t 0.0400 | eta 14:22:10
    [gsam] step 1236 epoch 4 eval val: top-1 76.12% (50000 images, 0:00:41)

A terminal is stdout and stderr both (tqdm draws on stderr, the trainer prints on stdout): with either one in a
file, the lines. The metrics of every step are in metrics.jsonl and wandb whatever is shown here.
"""
from __future__ import annotations

import dataclasses
import math
import sys
import time
from typing import TextIO


@dataclasses.dataclass(frozen=True)
class Style:
    """How progress is shown: tqdm ``bars``, else a line every ``every_s`` seconds on ``out`` (None: stdout).
    ``at``: where the run is, e.g. "step 309 epoch 1", put before an evaluation's line so that a periodic
    evaluation in a log says which weights it measured."""

    bars: bool
    every_s: float = 60.0
    out: TextIO | None = None
    at: str = ""

    @property
    def stream(self) -> TextIO:
        return self.out if self.out is not None else sys.stdout


def on_terminal() -> bool:
    return all(getattr(s, "isatty", lambda: False)() for s in (sys.stdout, sys.stderr))


def style(enabled: bool, every_s: float | None = 60.0) -> Style | None:
    """The style for this process's streams (``train.progress``, ``train.progress_every_s``); None when off."""
    if not enabled:
        return None
    every = 60.0 if every_s is None else float(every_s)
    if not math.isfinite(every) or every < 0:
        raise ValueError(f"train.progress_every_s={every_s!r}: expected a number of seconds >= 0")
    return Style(bars=on_terminal(), every_s=every)


def clock(seconds: float) -> str:
    """h:mm:ss (d days, h:mm:ss beyond a day)."""
    seconds = max(0, int(round(seconds)))
    days, rest = divmod(seconds, 86400)
    text = f"{rest // 3600}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}d {text}" if days else text


class TrainProgress:
    """The training's progress on rank 0, told after every step (``update``). ``world``: processes, so that img/s
    is the whole job's. The loss is read from the step's stats only when a line is printed (no host sync per
    step on a GPU)."""

    def __init__(self, how: Style, total: int, initial: int = 0, world: int = 1, now=time.monotonic):
        self.how, self.total, self.world, self.now = how, total, world, now
        self.bar = None
        if how.bars:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)
        self.start_step, self.start_t = initial, now()
        self.last_t, self.images = self.start_t, 0

    def update(self, step: int, epoch: int, images: int, stats) -> None:
        if self.bar is not None:
            self.bar.update(1)
            return
        self.images += images * self.world
        t = self.now()
        if t - self.last_t >= self.how.every_s or step == self.total:
            self.line(step, epoch, stats, t)

    def line(self, step: int, epoch: int, stats, t: float) -> None:
        rate = self.images / max(t - self.last_t, 1e-9)
        steps_per_s = (step - self.start_step) / max(t - self.start_t, 1e-9)
        eta = clock((self.total - step) / steps_per_s) if steps_per_s > 0 else "?"
        loss = float(stats.loss)
        print(f"[gsam] step {step}/{self.total} ({100 * step / max(self.total, 1):.1f}%) epoch {epoch} | "
              f"{rate:.0f} img/s | loss {loss:.4f} | rho_t {float(stats.rho):.4f} | eta {eta}",
              file=self.how.stream, flush=True)
        self.last_t, self.images = t, 0

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class EvalProgress:
    """One evaluation set's progress: a bar on a terminal (``leave``: tqdm's, None = removed when it closes under
    the training bar); else a line every ``every_s`` seconds of a long set and one line with its result."""

    def __init__(self, how: Style, name: str, batches: int, leave=None, now=time.monotonic):
        self.how, self.name, self.batches, self.now = how, name, batches, now
        self.bar = None
        if how.bars:
            from tqdm import tqdm

            self.bar = tqdm(total=batches, desc=f"eval {name}", unit="batch", dynamic_ncols=True, leave=leave)
        self.done, self.start_t = 0, now()
        self.last_t = self.start_t
        self.at = f"{how.at} " if how.at else ""

    def update(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)
            return
        self.done += n
        t = self.now()
        if t - self.last_t >= self.how.every_s and self.done < self.batches:
            print(f"[gsam] {self.at}eval {self.name}: {self.done}/{self.batches} batches", file=self.how.stream,
                  flush=True)
            self.last_t = t

    def close(self, metrics: dict | None = None) -> None:
        if self.bar is not None:
            self.bar.close()
        elif metrics is not None:
            images = metrics.get("images")
            count = f"{images} images, " if isinstance(images, int) else ""
            print(f"[gsam] {self.at}eval {self.name}: {headline(metrics)} ({count}{clock(self.now() - self.start_t)})",
                  file=self.how.stream, flush=True)


HEADLINE = (("top1", "top-1"), ("real_top1", "ReaL"), ("top1_all", "top-1 all classes"),
            ("top1_masked", "top-1 masked"), ("mean15", "mean of 15"), ("mce15", "mCE-15"))


def headline(metrics: dict) -> str:
    """A set's result in a few words: top-1 (and ReaL), ImageNet-R's two protocols, ImageNet-C's means."""
    return ", ".join(f"{label} {metrics[key]:.2f}" + ("" if key == "mce15" else "%") for key, label in HEADLINE
                     if isinstance(metrics.get(key), (int, float)) and math.isfinite(metrics[key]))
