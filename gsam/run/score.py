"""evaluate.py's work: a saved checkpoint scored on every configured evaluation set, with the parts built as
training builds them (gsam/run/build.py), and its results written next to the run's own.
"""
from __future__ import annotations

import contextlib
import signal
import sys
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from gsam import failsafe
from gsam.run.build import build, start
from gsam.state import released
from gsam.state.checkpoint import CheckpointError, load, load_weights
from gsam.state.preemption import Preempted, Preemption
from gsam.config.checks import ConfigError, batch_plan
from gsam.evaluation.table1 import results_markdown
from gsam.evaluation.sets import measure_sets
from gsam.progress import style as progress_style
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


def results_stem(path: Path, out: Path, is_released: bool = False) -> str:
    """``results`` for this run's own last.pt; any other checkpoint's results are named after it (and after its
    run folder when it is not this run's), so they never overwrite this run's. A released model's are ``results``
    in a folder that holds no training run (``checkpoints/``), so that make_table reads it as a row."""
    own = out / "checkpoints"
    if is_released:
        return f"results-released-{path.stem}" if own.exists() else "results"
    if path.parent.resolve() == own.resolve():
        return "results" if path.name == "last.pt" else f"results-{path.stem}"
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return f"results-{run_dir.name}-{path.stem}"


def released_model(cfg: DictConfig, path: Path, npz: released.Released | None, saved: dict, notice=print) -> str | None:
    """The released file that ``path`` holds (a released ``.npz``, or one of our checkpoints converted from it by
    scripts/convert_released.py); None for a checkpoint of our own runs. For a released one, ``cfg``'s model
    becomes the released architecture: the row's model with the released pooling and activation
    (gsam/state/released.py, ``Released.model_kwargs``)."""
    if npz is None and "released" not in saved:
        return None
    origin = saved.get("released") or {"file": str(path), "family": npz.family, "model_kwargs": npz.model_kwargs}
    if cfg.model.family != origin["family"]:
        raise CheckpointError(f"{path} holds a released {origin['family']} model; model.family is "
                              f"{cfg.model.family} ({cfg.name}): evaluate it with a {origin['family']} row")
    kwargs = dict(cfg.model.get("kwargs") or {})
    changed = {k: v for k, v in origin["model_kwargs"].items() if kwargs.get(k) != v}
    with open_dict(cfg):
        cfg.model.kwargs = {**kwargs, **origin["model_kwargs"]}
    if changed:
        notice(f"[gsam] {path.name}: the released {origin['family']}'s architecture, model.kwargs "
               + ", ".join(f"{k}={v}" for k, v in changed.items()))
    return origin["file"]


def check_released_model(cfg: DictConfig, path: Path, npz: released.Released | None):
    """The model ``cfg`` now builds (returned, on the CPU), checked: it takes the released file tensor for tensor
    (``released.check_fits``) and inputs in [-1, 1], as the released models were trained (big_vision
    value_range(-1, 1); vision_transformer's input pipeline (im - 127.5) / 127.5)."""
    from gsam import models

    model = models.build_model(cfg.model, num_classes=int(cfg.data.num_classes))
    if npz is not None:
        released.check_fits(model, npz)
    norm = models.model_data_config(model)
    if (tuple(norm["mean"]), tuple(norm["std"])) != released.RELEASED_MEAN_STD:
        raise CheckpointError(f"{path}: this model normalises with mean {norm['mean']} and std {norm['std']}; the "
                              "released models take inputs in [-1, 1] (mean = std = 0.5)")
    return model


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
    npz = released.read(path) if path.suffix == ".npz" else None
    saved = {} if npz else load(path)
    origin = released_model(cfg, path, npz, saved, notice=print if info.main else lambda *_: None)
    if npz is None:
        check_same_experiment(saved["config"], OmegaConf.to_container(cfg, resolve=True), path)
    if origin:  # refused before the data loaders start: a model built alone is checked against the file
        check_released_model(cfg, path, npz)
    parts = build(cfg, info, batch_plan(int(cfg.data.batch_size), info.world, cfg.data.max_device_batch))
    if npz:
        released.load_into(parts.model, npz)
    else:
        load_weights(parts.model, saved["model"], path)
    results = measure_sets(parts.eval_sets, parts.model, info.device, parts.amp, parts.channels_last,
                           progress=progress_style(info.main and bool(cfg.train.progress),
                                                   cfg.train.get("progress_every_s")))
    if info.main:
        report_scores(cfg, path, saved, results, origin)
    if lock is not None:
        lock.close()
    return results


def report_scores(cfg: DictConfig, path: Path, saved: dict, results: dict, origin: str | None = None) -> None:
    """``<stem>.json`` and ``<stem>.md`` in the run's folder, Table 1's columns in the checkpoint's wandb run's
    summary, the table printed. A released model's results carry ``released`` (its file): make_table's
    "<method> (released)" row."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = results_stem(path, out, is_released=origin is not None)
    step = None if origin else saved.get("loop", {}).get("step")  # a released file holds no training position
    write_results(out / f"{stem}.json", results, cfg, checkpoint=str(path), step=step,
                  **({"released": origin} if origin else {}))
    table = results_markdown(results)
    (out / f"{stem}.md").write_text(f"# {cfg.name}{' (released)' if origin else ''}: {path}\n\n{table}\n")
    logger = RunLogger(out, enabled=True, wandb_cfg=cfg.logger.wandb, config=OmegaConf.to_container(cfg, resolve=True),
                       run_id=saved.get("wandb_id"), name=f"{cfg.name}_released" if origin else cfg.name)
    logger.set_summary(table1_summary(results))
    logger.close()
    print(table)
