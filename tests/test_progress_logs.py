"""Progress fit for logs (gsam/progress.py): with stdout not a terminal (a Slurm log, a pipe, pytest's capture) the
trainer prints a plain line every train.progress_every_s seconds (step, epoch, img/s, loss, rho_t, ETA) and one
line per evaluated set, and no carriage-return redraw anywhere; on a terminal, tqdm bars."""
import io
import re

import pytest

from gsam.config.checks import ConfigError, check
from gsam.progress import EvalProgress, Style, TrainProgress, clock, style
from gsam.run.experiment import run
from gsam.runlog import read_metrics
from support.cli import QUIET

LINE = re.compile(r"^\[gsam\] step (\d+)/(\d+) \(\d+\.\d%\) epoch (\d+) \| (\d+) img/s \| loss (\d+\.\d{4}) \| "
                  r"rho_t (\d\.\d{4}) \| eta (\d+:\d\d:\d\d)$")


class Stats:
    def __init__(self, loss=2.5, rho=0.04):
        self.loss, self.rho = loss, rho


class Clock:
    """A clock the test moves."""

    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_a_line_every_n_seconds_with_the_jobs_throughput_and_eta():
    """Steps of 10 s, lines every 60 s: a line at steps 6, 12 and at the last step (18 of 18); img/s counts every
    process's images (2 x 32 per step over 10 s = 6.4 -> "6"), the ETA the remaining steps at the mean rate."""
    out, now = io.StringIO(), Clock()
    progress = TrainProgress(Style(bars=False, every_s=60, out=out), total=18, world=2, now=now)
    for step in range(1, 19):
        now.t += 10
        progress.update(step, epoch=step // 9, images=32, stats=Stats(loss=3.0 - step / 10))
    lines = [LINE.match(line).groups() for line in out.getvalue().splitlines()]
    assert [(s, total, epoch) for s, total, epoch, *_ in lines] == [("6", "18", "0"), ("12", "18", "1"),
                                                                    ("18", "18", "2")]
    assert [g[3] for g in lines] == ["6", "6", "6"] and lines[0][4] == "2.4000" and lines[0][5] == "0.0400"
    assert [g[6] for g in lines] == ["0:02:00", "0:01:00", "0:00:00"]  # 12, 6, 0 steps left at 10 s a step


def test_on_a_terminal_tqdm_bars_and_no_lines(capsys):
    progress = TrainProgress(Style(bars=True), total=3)
    for step in (1, 2, 3):
        progress.update(step, 0, 32, Stats())
    progress.close()
    shown = EvalProgress(Style(bars=True), "val", batches=2)
    shown.update(), shown.update()
    shown.close({"top1": 50.0, "images": 64})
    out, err = capsys.readouterr()
    assert out == "" and "3/3" in err and "eval val" in err


def test_the_style_follows_the_streams(monkeypatch):
    """pytest's captured streams are not terminals: lines. Both streams terminals: bars; one in a file: lines."""
    assert style(True, 30) == Style(bars=False, every_s=30.0) and style(False) is None
    monkeypatch.setattr("sys.stdout.isatty", lambda: True, raising=False)
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    assert style(True).bars
    monkeypatch.setattr("sys.stderr.isatty", lambda: False, raising=False)
    assert not style(True).bars
    assert clock(93784) == "1d 2:03:04"


def test_a_negative_period_is_refused_in_one_line(compose):
    with pytest.raises(ConfigError, match=r"^train.progress_every_s=-1: expected seconds >= 0"):
        check(compose("+experiment=demo_gsam", "train.progress_every_s=-1"))


@pytest.mark.slow
def test_a_run_into_a_log_prints_lines_and_no_redraws(compose, demo_root, tmp_path, capsys):
    """The trainer in process, stdout and stderr captured (not terminals): 2 steps with a line after each
    (progress_every_s=0) holding the loss and rho_t that metrics.jsonl logs, one line with the evaluated set's
    result, and no carriage return in either stream."""
    cfg = compose("+experiment=demo_gsam", f"data.root={demo_root}", f"output_dir={tmp_path / 'run'}", *QUIET,
                  "train.progress=true", "train.progress_every_s=0", "train.max_steps=2", "data.batch_size=64")
    run(cfg)
    out, err = capsys.readouterr()
    steps = [LINE.match(line).groups() for line in out.splitlines() if line.startswith("[gsam] step ")
             and " eval " not in line]
    assert [(s, total, epoch) for s, total, epoch, *_ in steps] == [("1", "2", "0"), ("2", "2", "0")]
    logged = read_metrics(tmp_path / "run")["train"]  # the same step's loss and rho_t as metrics.jsonl has them
    assert [(float(g[4]), float(g[5])) for g in steps] == [(round(r["loss"], 4), round(r["rho"], 4)) for r in logged]
    evals = [line for line in out.splitlines() if " eval val: top-1" in line]
    assert len(evals) == 1 and re.match(r"^\[gsam\] step 2 epoch 0 eval val: top-1 \d+\.\d\d% \(\d+ images, ", evals[0])
    assert "\r" not in out + err
