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
from .checkpoint import CheckpointManager
from .config import ConfigError, amp_dtype, batch_plan, check
from .distributed import barrier, init_distributed, rng_state, seed_everything, set_rng_state
from .engine import LoopState, StepPlan, evaluate, loss_function, train_one_epoch
from .logging import RunLogger
from .optim.factory import build_optimizer


def _build_data(cfg: DictConfig, info, plan, mean, std):
    from data.folder import build_folder_loaders

    d = cfg.data
    if d.loader != "folder":
        raise ConfigError(f"data.loader={d.loader!r}: expected 'folder'")
    root = d.root
    if d.name == "demo":
        from data.demo import write_demo_dataset

        if info.main:
            write_demo_dataset(root, image_size=int(d.source_size))
        barrier()
    if root is None or not Path(root).is_dir():
        raise ConfigError(f"data.root={root!r}: no such directory (point it at the dataset folder)")
    return build_folder_loaders(
        root=root, train_split=d.train_split, val_split=d.val_split, img_size=int(d.img_size), mean=mean, std=std,
        batch=plan.per_rank, eval_batch=int(d.eval_batch_size), num_workers=int(d.num_workers), rank=info.rank,
        world=info.world, seed=int(cfg.seed), minival_fraction=float(d.minival_fraction), crop_pct=float(d.crop_pct),
        min_crop_scale=float(d.min_crop_scale))


def _channels_last(cfg: DictConfig) -> bool:
    """``auto``: ResNets only (convolutions are faster in NHWC; transformers gain nothing)."""
    return cfg.train.channels_last is True or (cfg.train.channels_last == "auto" and cfg.model.family == "resnet")


def _gather_rng() -> list:
    states = [None] * (dist.get_world_size() if dist.is_initialized() else 1)
    if dist.is_initialized():
        dist.all_gather_object(states, rng_state())
    else:
        states[0] = rng_state()
    return states


def results_table(results: dict) -> str:
    lines = ["| set | top-1 (%) | top-5 (%) | loss | images |", "|---|---|---|---|---|"]
    for name, m in results.items():
        lines.append(f"| {name} | {m['top1']:.2f} | {m['top5']:.2f} | {m['loss']:.4f} | {m['images']} |")
    return "\n".join(lines)


def run(cfg: DictConfig) -> dict:
    """Train as configured; returns the final evaluation ({set: metrics})."""
    import models

    check(cfg)
    info = init_distributed(cfg.train.device)
    plan_b = batch_plan(int(cfg.data.batch_size), info.world, cfg.data.max_device_batch)
    seed_everything(int(cfg.seed), info.rank)
    out = Path(cfg.output_dir)
    amp = amp_dtype(cfg.train.amp, info.device)

    model = models.build_model(cfg.model, num_classes=int(cfg.data.num_classes))
    data_cfg = models.model_data_config(model)
    train_loader, eval_loaders, num_classes = _build_data(cfg, info, plan_b, data_cfg["mean"], data_cfg["std"])
    if num_classes != int(cfg.data.num_classes):
        raise ConfigError(f"data.num_classes={cfg.data.num_classes} but {cfg.data.root} has {num_classes} classes")
    model.to(info.device)
    channels_last = _channels_last(cfg)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    ddp = None
    if info.world > 1:
        ddp = DistributedDataParallel(model, device_ids=[info.local_rank] if info.device.type == "cuda" else None)
    wrapped = torch.compile(ddp or model) if cfg.train.compile else (ddp or model)
    scaler = torch.amp.GradScaler(info.device.type) if amp == torch.float16 else None
    # the optimizer gets the DDP object itself (no_sync, BN layers), not the compiled wrapper
    opt = build_optimizer(model, cfg.optimizer, cfg.sam, wrapper=ddp, grad_scaler=scaler)
    loss_fn = loss_function(cfg.model.loss, num_classes)

    steps_per_epoch = len(train_loader)
    total = int(cfg.schedule.epochs) * steps_per_epoch
    rho_max = float(cfg.sam.get("rho_max", 0.0) or 0.0)
    plan = StepPlan(total_steps=total, warmup_steps=min(int(cfg.schedule.warmup_steps), total),
                    lr_max=float(cfg.optimizer.lr), lr_min=float(cfg.optimizer.lr_min), decay=cfg.schedule.decay,
                    rho_max=rho_max, rho_min=float(cfg.sam.get("rho_min", rho_max) or 0.0), accum=plan_b.accum,
                    amp_dtype=amp, max_bad_steps=int(cfg.train.max_bad_steps), log_every=int(cfg.train.log_every),
                    checkpoint_every=int(cfg.train.checkpoint_every_steps), channels_last=channels_last)

    ckpt = CheckpointManager(out / "checkpoints", keep_top_k=int(cfg.train.keep_top_k))
    state = LoopState()
    run_id = None
    resumed = ckpt.resume_state() if cfg.train.resume else None
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        opt.load_state_dict(resumed["optimizer"])
        if scaler is not None and resumed.get("scaler"):
            scaler.load_state_dict(resumed["scaler"])
        state = LoopState(**resumed["loop"])
        if len(resumed["rng"]) == info.world:
            set_rng_state(resumed["rng"][info.rank])
        elif info.main:  # legitimate, but the data order and random streams differ from the saved run
            print(f"[gsam] resuming {len(resumed['rng'])}-process checkpoint on {info.world} processes: "
                  "the run continues, not bit for bit")
        run_id = resumed.get("wandb_id")
    config = OmegaConf.to_container(cfg, resolve=True)
    logger = RunLogger(out, enabled=info.main, wandb_cfg=cfg.logger.wandb, config=config, run_id=run_id,
                       name=cfg.name)
    if info.main:
        (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        print(f"[gsam] {cfg.name}: {cfg.model.name} {cfg.sam.name}/{cfg.optimizer.name}, {info.world} process(es) on "
              f"{info.device}, batch {plan_b.global_batch} = {info.world} x {plan_b.accum} x {plan_b.micro}, "
              f"{steps_per_epoch} steps/epoch, {total} steps" + (f", resumed at step {state.step}" if resumed else ""))

    def checkpoint_state() -> dict:
        return {"model": model.state_dict(), "optimizer": opt.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None, "loop": dataclasses.asdict(state),
                "rng": _gather_rng(), "wandb_id": logger.run_id, "config": config}

    def save_last() -> None:
        st = checkpoint_state()  # every rank takes part (RNG gather)
        if info.main and not ckpt.save_last(st):
            print(f"[gsam] step {state.step}: weights are not finite, checkpoint not written (last good one kept)")
        barrier()

    def run_evals() -> dict:
        results = {name: evaluate(wrapped, ld, loss_fn, info.device, amp, num_classes, channels_last)
                   for name, ld in eval_loaders.items()}
        for name, m in results.items():
            logger.log(state.step, m, kind=name)
        logger.summary_row({"epoch": state.epoch, "step": state.step,
                            **{f"{n}_{k}": v for n, m in results.items() for k, v in m.items()}})
        key = "minival" if "minival" in results else "val"
        if key in results:
            st = checkpoint_state()
            if info.main:
                ckpt.save_top(st, results[key]["top1"], state.step)
        return results

    monitor = sharpness_monitor(cfg, model, train_loader, loss_fn, info.device)  # analysis.every_n_epochs
    stop_at = int(cfg.train.max_steps) if cfg.train.max_steps else total
    progress = None
    if info.main and cfg.train.progress:
        from tqdm import tqdm

        progress = tqdm(total=min(stop_at, total), initial=state.step, unit="step", dynamic_ncols=True)
    results = {}
    try:
        while state.step < min(stop_at, total):
            train_loader.sampler.set_epoch(state.epoch, start_batch=state.batch_in_epoch)
            epoch_before = state.epoch
            train_one_epoch(wrapped, opt, train_loader, loss_fn, plan, state, info.device,
                            on_log=lambda step, m: logger.log(step, m), on_checkpoint=save_last, stop_at=stop_at,
                            progress=progress)
            if monitor is not None and state.epoch > epoch_before and monitor.due(state.epoch):
                logger.log(state.step, {"epoch": state.epoch, **monitor.measure()}, kind="analysis")
            if state.epoch > epoch_before and (state.epoch % int(cfg.train.eval_every_epochs) == 0) \
                    and state.step < min(stop_at, total):
                results = run_evals()
        results = run_evals()
        save_last()
    finally:
        if progress is not None:
            progress.close()
    if info.main:
        final = {"results": results, "step": state.step, "epoch": state.epoch, "bad_steps": state.bad_steps_total,
                 "name": cfg.name}
        (out / "results.json").write_text(json.dumps(final, indent=2))
        logger.set_summary({f"{n}/{k}": v for n, m in results.items() for k, v in m.items()})
        print(results_table(results))
    logger.close()
    return results



def evaluate_checkpoint(cfg: DictConfig) -> dict:
    """Evaluate a checkpoint (``eval.checkpoint``, default the run's last) on the configured eval sets;
    writes ``eval_results.json`` beside the run's files and prints the table."""
    import models

    from .checkpoint import load

    check(cfg)
    info = init_distributed(cfg.train.device)
    path = Path(cfg.eval.checkpoint or Path(cfg.output_dir) / "checkpoints" / "last.pt")
    if not path.exists():
        raise ConfigError(f"eval.checkpoint={str(path)!r}: no such file")
    state = load(path)
    model = models.build_model(cfg.model, num_classes=int(cfg.data.num_classes))
    model.load_state_dict(state["model"])
    data_cfg = models.model_data_config(model)
    plan_b = batch_plan(int(cfg.data.batch_size), info.world, cfg.data.max_device_batch)
    _, eval_loaders, num_classes = _build_data(cfg, info, plan_b, data_cfg["mean"], data_cfg["std"])
    channels_last = _channels_last(cfg)
    model.to(info.device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    amp = amp_dtype(cfg.train.amp, info.device)
    loss_fn = loss_function(cfg.model.loss, num_classes)
    results = {name: evaluate(model, ld, loss_fn, info.device, amp, num_classes, channels_last)
               for name, ld in eval_loaders.items()}
    if info.main:
        out = Path(cfg.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval_results.json").write_text(json.dumps({"checkpoint": str(path), "results": results}, indent=2))
        print(results_table(results))
    return results
