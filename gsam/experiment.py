"""One training run from a composed config: build the parts, resume, loop, evaluate, report.

Lives in the package (not in ``train.py``) so that Hydra's submitit launcher can pickle the task.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel

from .analysis.monitor import sharpness_monitor
from .checkpoint import CheckpointError, CheckpointManager
from .config import ConfigError, amp_dtype, batch_plan, check
from .config_keys import check_known_keys
from .divergence import DivergenceGuard
from .distributed import barrier, init_distributed, raise_on_every_rank, rng_state, seed_everything
from .engine import LoopState, StepPlan, loss_function, train_one_epoch
from .evaluators import results_markdown, table1_row
from .runlog import RunLogger, truncate_logs
from .table1 import table1_method
from .optim.factory import build_optimizer
from .preemption import Preemption
from .resume import check_resume, restore
from .runlock import lock_for_run


def _build_data(cfg: DictConfig, info, plan, mean, std, channels_last: bool):
    from gsam.data.build import build_data

    try:
        return build_data(cfg.data, seed=int(cfg.seed), rank=info.rank, world=info.world, is_main=info.main,
                          per_rank_batch=plan.per_rank, device=info.device, channels_last=channels_last, mean=mean,
                          std=std, barrier=barrier)
    except (FileNotFoundError, ImportError, ValueError) as e:
        raise ConfigError(str(e)) from e


def _evaluators(cfg: DictConfig, info, data, loss_fn, mean, std) -> dict:
    from .eval_suite import build_evaluators

    return build_evaluators(cfg, classes=data.classes, loaders=data.evals, files=data.files, loss_fn=loss_fn,
                            mean=mean, std=std, rank=info.rank, world=info.world,
                            notice=print if info.main else lambda *_: None)


def _build_model(cfg: DictConfig):
    """The model of ``model.*``; a name timm does not know (or a bad head option) is a ConfigError naming it."""
    from gsam import models

    try:
        return models.build_model(cfg.model, num_classes=int(cfg.data.num_classes))
    except (ValueError, TypeError) as e:  # unknown name, unknown or mistyped timm kwargs
        raise ConfigError(f"model: {e}") from e


def _scalars(metrics: dict) -> dict:
    """The numbers of a set's metrics, without nested details (ImageNet-C's per-corruption tables)."""
    return {k: v for k, v in metrics.items() if not isinstance(v, dict)}


def _write_results(path: Path, results: dict, cfg: DictConfig, **extra) -> dict:
    """``results.json``: Table 1's columns at the top level (top-1 %), every set's metrics under ``results``."""
    method = table1_method(str(cfg.sam.name))
    final = {**table1_row(results), "name": cfg.name, "model": cfg.model.short, "method": method, **extra,
             "results": results}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(final, indent=2))
    tmp.replace(path)
    return final


def _channels_last(cfg: DictConfig) -> bool:
    """``auto``: ResNets only (convolutions are faster in NHWC; transformers gain nothing)."""
    return cfg.train.channels_last is True or (cfg.train.channels_last == "auto" and cfg.model.family == "resnet")


def _compiled(model, setting):
    """``train.compile``: false, true (inductor) or the name of a torch.compile backend (e.g. aot_eager, which
    traces and differentiates as inductor does without generating code: the kit's CPU rehearsal uses it)."""
    if setting is False or setting is None:
        return model
    return torch.compile(model) if setting is True else torch.compile(model, backend=str(setting))


def _gather_rng() -> list:
    states = [None] * (dist.get_world_size() if dist.is_initialized() else 1)
    if dist.is_initialized():
        dist.all_gather_object(states, rng_state())
    else:
        states[0] = rng_state()
    return states


def _resume(cfg: DictConfig, ckpt: CheckpointManager, config: dict, parts, info, out: Path):
    """(loop state, wandb run id) from ``last.pt`` when there is one and ``train.resume`` allows it. The logs are
    cut back to the checkpoint, so the steps the resumed run replays are recorded once."""
    resumed = ckpt.resume_state() if cfg.train.resume else None
    if resumed is None:
        return LoopState(), None
    changes = check_resume(resumed["config"], config, cfg.train.resume, ckpt.last)
    state = restore(resumed, *parts, info, changes)
    if info.main and resumed.get("log"):
        truncate_logs(out, resumed["log"])
    return state, resumed.get("wandb_id")


def _save_on_every_rank(save, info) -> None:
    """Rank 0 writes; if that fails (disk full) every rank stops with its one-line error instead of waiting."""
    error = None
    if info.main:
        try:
            save()
        except CheckpointError as e:
            error = e
    raise_on_every_rank(error, info.device, CheckpointError("rank 0 could not write the checkpoint"))


def run(cfg: DictConfig) -> dict:
    """Train as configured; returns the final evaluation ({set: metrics})."""
    from gsam import models

    check(cfg)
    check_known_keys(cfg)
    info = init_distributed(cfg.train.device)
    preemption = Preemption(cfg.train.preempt_signals, info.device)  # a bad signal name fails before the build
    m = None if cfg.sam.name == "none" else cfg.sam.get("m")  # vanilla: nothing to perturb, batch as before
    plan_b = batch_plan(int(cfg.data.batch_size), info.world, cfg.data.max_device_batch, m)
    seed_everything(int(cfg.seed), info.rank)
    out = Path(cfg.output_dir)
    lock = lock_for_run(out, info.main, info.device)  # before anything in out is read or written
    amp = amp_dtype(cfg.train.amp, info.device)

    model = _build_model(cfg)
    data_cfg = models.model_data_config(model)
    channels_last = _channels_last(cfg)
    data = _build_data(cfg, info, plan_b, data_cfg["mean"], data_cfg["std"], channels_last)
    train_loader, num_classes = data.train, len(data.classes)
    if num_classes != int(cfg.data.num_classes):
        raise ConfigError(f"data.num_classes={cfg.data.num_classes} but the data has {num_classes} classes")
    model.to(info.device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    ddp = None
    if info.world > 1:
        ddp = DistributedDataParallel(model, device_ids=[info.local_rank] if info.device.type == "cuda" else None)
    wrapped = _compiled(ddp or model, cfg.train.compile)
    scaler = torch.amp.GradScaler(info.device.type) if amp == torch.float16 else None
    # the optimizer gets the DDP object itself (no_sync, BN layers), not the compiled wrapper
    opt = build_optimizer(model, cfg.optimizer, cfg.sam, wrapper=ddp, grad_scaler=scaler)
    loss_fn = loss_function(cfg.model.loss, num_classes)
    evaluators = _evaluators(cfg, info, data, loss_fn, data_cfg["mean"], data_cfg["std"])
    periodic = {k: v for k, v in evaluators.items() if k in ("minival", "val")}

    steps_per_epoch = len(train_loader)
    total = int(cfg.schedule.epochs) * steps_per_epoch
    rho_max = float(cfg.sam.get("rho_max", 0.0) or 0.0)
    plan = StepPlan(total_steps=total, warmup_steps=min(int(cfg.schedule.warmup_steps), total),
                    lr_max=float(cfg.optimizer.lr), lr_min=float(cfg.optimizer.lr_min), decay=cfg.schedule.decay,
                    rho_max=rho_max, rho_min=float(cfg.sam.get("rho_min", rho_max) or 0.0), accum=plan_b.accum,
                    amp_dtype=amp, max_bad_steps=int(cfg.train.max_bad_steps), log_every=int(cfg.train.log_every),
                    checkpoint_every=int(cfg.train.checkpoint_every_steps), channels_last=channels_last,
                    groups=plan_b.groups, search_every_epochs=int(cfg.sam.get("search_every_epochs", 0)))

    ckpt = CheckpointManager(out / "checkpoints", keep_top_k=int(cfg.train.keep_top_k),
                             keep_previous=int(cfg.train.keep_previous))
    if info.main:
        ckpt.remove_partial_files()  # the lock is ours: these are from a killed run
    config = OmegaConf.to_container(cfg, resolve=True)
    state, run_id = _resume(cfg, ckpt, config, (model, opt, scaler), info, out)
    resumed = state.step > 0
    logger = RunLogger(out, enabled=info.main, wandb_cfg=cfg.logger.wandb, config=config, run_id=run_id,
                       name=cfg.name)
    if info.main:
        (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        print(f"[gsam] {cfg.name}: {cfg.model.name} {cfg.sam.name}/{cfg.optimizer.name}, {info.world} process(es) on "
              f"{info.device}, batch {plan_b.global_batch} = {info.world} x {plan_b.groups * plan_b.accum} x "
              f"{plan_b.micro}, perturbation groups of {plan_b.m} images ({plan_b.groups} per process), "
              f"{steps_per_epoch} steps/epoch, {total} steps" + (f", resumed at step {state.step}" if resumed else ""))

    def checkpoint_state() -> dict:
        return {"model": model.state_dict(), "optimizer": opt.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None, "loop": dataclasses.asdict(state),
                "rng": _gather_rng(), "wandb_id": logger.run_id, "config": config, "log": logger.position}

    def save_last() -> None:
        st = checkpoint_state()  # every rank takes part (RNG gather)

        def write():
            if not ckpt.save_last(st):
                print(f"[gsam] step {state.step}: weights are not finite, checkpoint not written; {ckpt.describe()}")

        _save_on_every_rank(write, info)

    def run_evals(which: dict) -> dict:
        results = {name: ev(wrapped, info.device, amp, channels_last) for name, ev in which.items()}
        for name, m in results.items():
            logger.log(state.step, _scalars(m), kind=name)
        logger.summary_row({"epoch": state.epoch, "step": state.step,
                            **{f"{n}_{k}": v for n, m in results.items() for k, v in _scalars(m).items()}})
        key = "minival" if "minival" in results else "val"
        if key in results:
            st = checkpoint_state()
            _save_on_every_rank(lambda: ckpt.save_top(st, results[key]["top1"], state.step), info)
        return results

    monitor = sharpness_monitor(cfg, model, train_loader, loss_fn, info.device)  # analysis.every_n_epochs
    stop_at = int(cfg.train.max_steps) if cfg.train.max_steps else total
    progress = None
    if info.main and cfg.train.progress:
        from tqdm import tqdm

        progress = tqdm(total=min(stop_at, total), initial=state.step, unit="step", dynamic_ncols=True)
    results = {}
    divergence = DivergenceGuard(cfg.train.get("divergence_factor"))
    preemption.install()
    try:
        while state.step < min(stop_at, total):
            train_loader.sampler.set_epoch(state.epoch, start_batch=state.batch_in_epoch)
            epoch_before = state.epoch
            train_one_epoch(wrapped, opt, train_loader, loss_fn, plan, state, info.device,
                            on_log=lambda step, m: logger.log(step, m), on_checkpoint=save_last, stop_at=stop_at,
                            progress=progress, should_stop=preemption.should_stop, divergence=divergence)
            if preemption.triggered:
                raise preemption.stop(state.step, save_last, logger.close, info.main)
            if monitor is not None and state.epoch > epoch_before and monitor.due(state.epoch):
                logger.log(state.step, {"epoch": state.epoch, **monitor.measure()}, kind="analysis")
            if state.epoch > epoch_before and (state.epoch % int(cfg.train.eval_every_epochs) == 0) \
                    and state.step < min(stop_at, total):
                results = run_evals(periodic)
        save_last()  # before the final evaluation: a rerun of a finished run replays it, recorded once
        results = run_evals(evaluators)
    except FloatingPointError as e:  # say where the good weights are
        raise FloatingPointError(f"{e}; {ckpt.describe()}") from None
    finally:
        preemption.uninstall()
        if progress is not None:
            progress.close()
    if info.main:
        _write_results(out / "results.json", results, cfg, step=state.step, epoch=state.epoch,
                               bad_steps=state.bad_steps_total)
        logger.set_summary({**{f"table1/{k}": v for k, v in table1_row(results).items()},
                            **{f"{n}/{k}": v for n, m in results.items() for k, v in _scalars(m).items()}})
        print(results_markdown(results))
    logger.close()
    if lock is not None:
        lock.close()
    return results



def _check_same_experiment(saved: dict, current: dict, path: Path) -> None:
    """Results are labelled with this config's name, model and method: a checkpoint of another one is refused."""
    from .resume import config_changes

    changes = config_changes({**saved, "method": saved["sam"]["name"]}, {**current, "method": current["sam"]["name"]},
                             sections=("name", "method", "model"))
    if changes:
        listed = ", ".join(f"{k}: {new!r} here, {old!r} in the checkpoint" for k, (old, new) in changes.items())
        raise ConfigError(f"eval.checkpoint={path} is from another experiment ({listed}); evaluate it with its "
                          "own config")


def _results_stem(path: Path, out: Path) -> str:
    """``results`` for this run's own last.pt; any other checkpoint's results are named after it (and after its
    run folder when it is not this run's), so they never overwrite this run's."""
    own = out / "checkpoints"
    if path.parent.resolve() == own.resolve():
        return "results" if path.name == "last.pt" else f"results-{path.stem}"
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return f"results-{run_dir.name}-{path.stem}"


def evaluate_checkpoint(cfg: DictConfig) -> dict:
    """Evaluate a checkpoint (``eval.checkpoint``, default the run's last) on every configured set.

    Writes ``results.json`` and ``results.md`` in the run's folder (``results-<checkpoint>.*`` for a checkpoint
    other than ``last.pt``), puts Table 1's columns in the wandb summary, and prints the table.
    """
    from gsam import models

    from .checkpoint import load

    check(cfg)
    check_known_keys(cfg)
    info = init_distributed(cfg.train.device)
    path = Path(cfg.eval.checkpoint or Path(cfg.output_dir) / "checkpoints" / "last.pt")
    if not path.exists():
        raise ConfigError(f"eval.checkpoint={str(path)!r}: no such file")
    state = load(path)
    _check_same_experiment(state["config"], OmegaConf.to_container(cfg, resolve=True), path)
    model = _build_model(cfg)
    model.load_state_dict(state["model"])
    data_cfg = models.model_data_config(model)
    plan_b = batch_plan(int(cfg.data.batch_size), info.world, cfg.data.max_device_batch)
    channels_last = _channels_last(cfg)
    data = _build_data(cfg, info, plan_b, data_cfg["mean"], data_cfg["std"], channels_last)
    model.to(info.device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    amp = amp_dtype(cfg.train.amp, info.device)
    loss_fn = loss_function(cfg.model.loss, len(data.classes))
    evaluators = _evaluators(cfg, info, data, loss_fn, data_cfg["mean"], data_cfg["std"])
    results = {name: ev(model, info.device, amp, channels_last) for name, ev in evaluators.items()}
    if info.main:
        out = Path(cfg.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        stem = _results_stem(path, out)
        _write_results(out / f"{stem}.json", results, cfg, checkpoint=str(path),
                       step=state.get("loop", {}).get("step"))
        table = results_markdown(results)
        (out / f"{stem}.md").write_text(f"# {cfg.name}: {path}\n\n{table}\n")
        logger = RunLogger(out, enabled=True, wandb_cfg=cfg.logger.wandb, config=OmegaConf.to_container(cfg, resolve=True),
                           run_id=state.get("wandb_id"), name=cfg.name)
        logger.set_summary({f"table1/{k}": v for k, v in table1_row(results).items()})
        logger.close()
        print(table)
    return results
