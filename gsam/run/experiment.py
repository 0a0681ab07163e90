"""One training run from a composed config, top to bottom in ``run``: build the parts (gsam/run/build.py, shared
with evaluate.py), open the output folder and resume from its ``last.pt``, loop over the epochs, evaluate,
finish with ``results.json``.

Lives in the package (not in ``train.py``) so that Hydra's submitit launcher can pickle the task.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from gsam import failsafe
from gsam.analysis.monitor import sharpness_monitor
from gsam.run.build import Parts, Training, build, build_training, start, training_batches
from gsam.state.checkpoint import CheckpointManager, write_on_rank0
from gsam.config.checks import BatchPlan, ConfigError
from gsam.distributed import raise_on_every_rank
from gsam.state.divergence import DivergenceGuard
from gsam.run.engine import LoopState, train_one_epoch
from gsam.evaluation.table1 import results_markdown
from gsam.evaluation.sets import measure_sets
from gsam.run.finish import per_set, scalars, table1_summary, write_results
from gsam.state.preemption import Preemption
from gsam.run.resume import resume_from_last, snapshot
from gsam.state.run_folder import prepare_folder
from gsam.state.runlock import lock_for_run
from gsam.progress import Style, TrainProgress
from gsam.progress import style as progress_style
from gsam.runlog import RunLogger


def run(cfg: DictConfig) -> dict:
    """Train as configured; returns the final evaluation ({set: metrics}). Whatever ends it early, the other
    ranks are told and the loader workers are stopped (gsam/failsafe.py), so that the process can exit."""
    with failsafe.guarded():
        return _run(cfg)


def _run(cfg: DictConfig) -> dict:
    info = start(cfg)
    preemption = Preemption(cfg.train.preempt_signals, info.device)  # a bad signal name fails before the build
    batches = training_batches(cfg, info.world)
    lock = lock_for_run(Path(cfg.output_dir), info.main, info.device)  # before anything there is read or written
    parts = build(cfg, info, batches)
    training = build_training(cfg, parts, batches)
    session = open_run(cfg, parts, training)
    if info.main:
        announce(cfg, session, batches)
    results = train_and_evaluate(cfg, session, preemption)
    finish(cfg, session, results)
    if lock is not None:
        lock.close()
    return results


@dataclasses.dataclass
class Session:
    """A run under way: its parts, where the loop is, and what it writes (logs, checkpoints)."""

    parts: Parts
    training: Training
    state: LoopState
    logger: RunLogger
    checkpoints: CheckpointManager
    config: dict  # the resolved config, saved in every checkpoint
    out: Path

    def _snapshot(self) -> dict:
        t = self.training
        return snapshot(self.parts.model, t.opt, t.scaler, self.state, self.logger, self.config)

    def save_last(self) -> None:
        """``last.pt`` at this step boundary (every rank takes part: the RNG states are gathered)."""
        st = self._snapshot()

        def write():
            if not self.checkpoints.save_last(st):
                print(f"[gsam] step {self.state.step}: weights or optimizer state not finite, checkpoint not written; "
                      f"{self.checkpoints.describe()}")

        write_on_rank0(write, self.parts.info)

    def keep_if_best(self, results: dict) -> None:
        """A top-k checkpoint, by the minival top-1 (val's when there is no minival)."""
        key = "minival" if "minival" in results else "val"
        if key in results:
            st = self._snapshot()
            write_on_rank0(lambda: self.checkpoints.save_top(st, results[key]["top1"], self.state.step),
                           self.parts.info)


def open_run(cfg: DictConfig, parts: Parts, training: Training) -> Session:
    """The output folder's checkpoints (partial files of a killed run removed), the state resumed from
    ``last.pt`` when there is one, the logs (cut back to that checkpoint), ``config.yaml``."""
    out, info = Path(cfg.output_dir), parts.info
    checkpoints = CheckpointManager(out / "checkpoints", keep_top_k=int(cfg.train.keep_top_k),
                                    keep_previous=int(cfg.train.keep_previous))
    error, moved = None, None
    if info.main:
        try:
            moved = prepare_folder(out, cfg.train.resume)  # one run per folder
        except ConfigError as e:
            error = e
    raise_on_every_rank(error, info.device, ConfigError(f"output_dir={out} holds a run (refused on rank 0)"))
    if moved:
        print(f"[gsam] train.resume=restart: {moved}")
    if info.main:
        checkpoints.remove_partial_files()  # the lock is ours: these are from a killed run
    config = OmegaConf.to_container(cfg, resolve=True)
    state, run_id = resume_from_last(cfg.train.resume, checkpoints, config, parts.model, training.opt,
                                     training.scaler, info, out)
    logger = RunLogger(out, enabled=info.main, wandb_cfg=cfg.logger.wandb, config=config, run_id=run_id,
                       name=cfg.name)
    if info.main:
        (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return Session(parts, training, state, logger, checkpoints, config, out)


def announce(cfg: DictConfig, session: Session, b: BatchPlan) -> None:
    """One line: what runs where, how the batch is split, how long the run is."""
    info, plan, step = session.parts.info, session.training.plan, session.state.step
    print(f"[gsam] {cfg.name}: {cfg.model.name} {cfg.sam.name}/{cfg.optimizer.name}, {info.world} process(es) on "
          f"{info.device}, batch {b.global_batch} = {info.world} x {b.groups * b.accum} x {b.micro}, perturbation "
          f"groups of {b.m} images ({b.groups} per process), {len(session.parts.data.train)} steps/epoch, "
          f"{plan.total_steps} steps" + (f", resumed at step {step}" if step > 0 else ""))


def evaluate_and_keep_best(session: Session, sets: dict, progress: Style | None, should_stop=None) -> dict:
    """{set: metrics} of the training forward on ``sets``, logged (metrics.jsonl, summary.csv), and the weights
    kept as a top-k checkpoint when they are among the best so far. Cut short by ``should_stop`` (a preemption
    signal between two sets): nothing is logged, the caller stops."""
    p, state = session.parts, session.state
    if progress is not None:
        progress = dataclasses.replace(progress, at=f"step {state.step} epoch {state.epoch}")
    results = measure_sets(sets, session.training.forward, p.info.device, p.amp, p.channels_last, progress,
                           should_stop)
    if should_stop is not None and should_stop():
        return results
    for name, metrics in results.items():
        session.logger.log(state.step, scalars(metrics), kind=name)
    session.logger.summary_row({"epoch": state.epoch, "step": state.step, **per_set(results, "_")})
    session.keep_if_best(results)
    return results


def train_epochs(cfg: DictConfig, session: Session, preemption: Preemption, progress) -> None:
    """Epochs up to the plan's stop step; after every ``train.eval_every_epochs``-th the minival/val evaluation
    (not after the last: the final evaluation follows), the sharpness monitor after its epochs."""
    p, t, state = session.parts, session.training, session.state
    monitor = sharpness_monitor(cfg, p.model, p.data.train, p.loss_fn, p.info.device)  # analysis.every_n_epochs
    periodic = {k: v for k, v in p.eval_sets.items() if k in ("minival", "val")}
    divergence = DivergenceGuard(cfg.train.get("divergence_factor"))
    while state.step < t.plan.stop_step:
        p.data.train.sampler.set_epoch(state.epoch, start_batch=state.batch_in_epoch)
        epoch_before = state.epoch
        train_one_epoch(t.forward, t.opt, p.data.train, p.loss_fn, t.plan, state, p.info.device,
                        on_log=session.logger.log, on_checkpoint=session.save_last, progress=progress,
                        should_stop=preemption.should_stop, divergence=divergence)
        if preemption.triggered:
            raise preemption.stop(state.step, session.save_last, session.logger.close, p.info.main)
        if state.epoch == epoch_before:
            continue  # stopped inside the epoch at the stop step: the loop ends
        if monitor is not None and monitor.due(state.epoch):
            session.logger.log(state.step, {"epoch": state.epoch, **monitor.measure()}, kind="analysis")
        if state.epoch % int(cfg.train.eval_every_epochs) == 0 and state.step < t.plan.stop_step:
            evaluate_and_keep_best(session, periodic, None if progress is None else progress.how)


def train_and_evaluate(cfg: DictConfig, session: Session, preemption: Preemption) -> dict:
    """The epochs, ``last.pt``, then the final evaluation on every set; the progress on rank 0 (train.progress:
    a bar on a terminal, a line every train.progress_every_s seconds in a log). A stop on non-finite or
    diverging losses says where the good weights are."""
    how = progress_style(session.parts.info.main and cfg.train.progress, cfg.train.get("progress_every_s"))
    progress = None if how is None else TrainProgress(how, session.training.plan.stop_step,
                                                      initial=session.state.step, world=session.parts.info.world)
    preemption.install()
    try:
        train_epochs(cfg, session, preemption, progress)
        session.save_last()  # before the final evaluation: a rerun of a finished run replays it, recorded once
        # a time limit's signal during the final evaluation stops it between two sets and requeues: the requeued
        # job replays the whole evaluation from last.pt
        results = evaluate_and_keep_best(session, session.parts.eval_sets, how, preemption.should_stop)
        if preemption.triggered:
            p = session.parts
            raise preemption.stop(session.state.step, session.save_last, session.logger.close, p.info.main)
        return results
    except FloatingPointError as e:
        raise FloatingPointError(f"{e}; {session.checkpoints.describe()}") from None
    finally:
        preemption.uninstall()
        if progress is not None:
            progress.close()


def finish(cfg: DictConfig, session: Session, results: dict) -> None:
    """``results.json``, the wandb summary (Table 1's columns and every set's numbers) and the printed table,
    on rank 0; then the logs are closed."""
    state = session.state
    if session.parts.info.main:
        write_results(session.out / "results.json", results, cfg, step=state.step, epoch=state.epoch,
                      bad_steps=state.bad_steps_total)
        session.logger.set_summary({**table1_summary(results), **per_set(results, "/")})
        print(results_markdown(results))
    session.logger.close()
