"""evaluate.py's work: a saved checkpoint scored on every configured evaluation set, with the parts built as
training builds them (gsam/run/build.py), and its results written next to the run's own.
"""
from __future__ import annotations

import contextlib
import signal
import sys
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from gsam import failsafe
from gsam.run.build import build, start
from gsam.state.checkpoint import load, load_weights
from gsam.state.preemption import Preempted, Preemption
from gsam.config.checks import ConfigError, batch_plan
from gsam.evaluation.table1 import results_markdown
from gsam.evaluation.sets import measure_sets
from gsam.run.finish import table1_summary, write_results
from gsam.run.resume import config_changes
from gsam.state.runlock import lock_for_run
from gsam.runlog import RunLogger


def check_same_experiment(saved: dict, current: dict, path: Path) -> None:
    """Results are labelled with this config's name, model and method, and the model's head has
    ``data.num_classes`` outputs: a checkpoint of another experiment, or of another class count, is refused."""
    changes = config_changes({**saved, "method": saved["sam"]["name"]}, {**current, "method": current["sam"]["name"]},
                             sections=("name", "method", "model"))
    if changes:
        listed = ", ".join(f"{k}: {new!r} here, {old!r} in the checkpoint" for k, (old, new) in changes.items())
        raise ConfigError(f"eval.checkpoint={path} is from another experiment ({listed}); evaluate it with its "
                          "own config")
    classes = saved["data"]["num_classes"], current["data"]["num_classes"]
    if classes[0] != classes[1]:
        raise ConfigError(f"eval.checkpoint={path} was trained with data.num_classes={classes[0]}, not "
                          f"{classes[1]}; evaluate it with its own config")


def results_stem(path: Path, out: Path) -> str:
    """``results`` for this run's own last.pt; any other checkpoint's results are named after it (and after its
    run folder when it is not this run's), so they never overwrite this run's."""
    own = out / "checkpoints"
    if path.parent.resolve() == own.resolve():
        return "results" if path.name == "last.pt" else f"results-{path.stem}"
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return f"results-{run_dir.name}-{path.stem}"


def score_checkpoint(cfg: DictConfig) -> dict:
    """Score a checkpoint (``eval.checkpoint``, default the run's last) on every configured set.

    Writes ``results.json`` and ``results.md`` in the run's folder (``results-<checkpoint>.*`` for a checkpoint
    other than ``last.pt``), puts Table 1's columns in the wandb summary, and prints the table. Whatever ends it
    early stops the loader workers and tells the other ranks (gsam/failsafe.py); a preemption signal ends it in
    one line (``stopped_by_signals``).
    """
    with failsafe.guarded(), stopped_by_signals(cfg.train.preempt_signals):
        return _score(cfg)


class _Signalled(BaseException):
    """Raised by the signal handler; a BaseException, so that no ``except Exception`` on the way holds it."""


@contextlib.contextmanager
def stopped_by_signals(names):
    """evaluate.py has no step boundary to wait for and nothing to checkpoint: a signal of
    ``train.preempt_signals`` (Slurm's USR2 or TERM, Ctrl-C) ends it at once, with one line saying that no
    results were written, and exit status 3 (``Preempted``: rerun the same command). It used to die without a
    word, which left a user to guess whether results.json was new."""
    def handler(signum, _frame):
        raise _Signalled(signum)

    previous = {sig: signal.signal(sig, handler) for sig in Preemption(names, torch.device("cpu")).signals}
    try:
        yield
    except _Signalled as e:
        name = signal.Signals(e.args[0]).name
        message = f"[gsam] evaluate.py: stopped by {name} before its results were written; rerun the same command"
        print(message, file=sys.stderr, flush=True)
        raise Preempted(message, requeued=False) from None
    finally:
        for sig, handler_before in previous.items():
            signal.signal(sig, handler_before)


def _score(cfg: DictConfig) -> dict:
    info = start(cfg)
    # it writes into output_dir: not while a run trains there (FolderInUse names the holder)
    lock = lock_for_run(Path(cfg.output_dir), info.main, info.device)
    path = Path(cfg.eval.checkpoint or Path(cfg.output_dir) / "checkpoints" / "last.pt")
    if not path.exists():
        raise ConfigError(f"eval.checkpoint={str(path)!r}: no such file")
    saved = load(path)
    check_same_experiment(saved["config"], OmegaConf.to_container(cfg, resolve=True), path)
    parts = build(cfg, info, batch_plan(int(cfg.data.batch_size), info.world, cfg.data.max_device_batch))
    load_weights(parts.model, saved["model"], path)
    results = measure_sets(parts.eval_sets, parts.model, info.device, parts.amp, parts.channels_last,
                           progress=info.main and bool(cfg.train.progress))
    if info.main:
        report_scores(cfg, path, saved, results)
    if lock is not None:
        lock.close()
    return results


def report_scores(cfg: DictConfig, path: Path, saved: dict, results: dict) -> None:
    """``<stem>.json`` and ``<stem>.md`` in the run's folder, Table 1's columns in the checkpoint's wandb run's
    summary, the table printed."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = results_stem(path, out)
    write_results(out / f"{stem}.json", results, cfg, checkpoint=str(path), step=saved.get("loop", {}).get("step"))
    table = results_markdown(results)
    (out / f"{stem}.md").write_text(f"# {cfg.name}: {path}\n\n{table}\n")
    logger = RunLogger(out, enabled=True, wandb_cfg=cfg.logger.wandb, config=OmegaConf.to_container(cfg, resolve=True),
                       run_id=saved.get("wandb_id"), name=cfg.name)
    logger.set_summary(table1_summary(results))
    logger.close()
    print(table)
