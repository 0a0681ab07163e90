"""The parts of the GPU acceptance kit (``scripts/gpu/gpu_check.py`` runs them): each returns its figures or raises.

Full size (one GPU): 20 classes x 100 train + 25 val JPEGs of 500x375, betons by ``scripts/write_betons.py``,
about 50 steps per training run at batch 256. ``--tiny``: 4 classes of 80x60 images, 32 px inputs, two-block
transformers of width 64 and ResNets of one bottleneck per stage at 1/8 width, a few steps at batch 8, for the CPU
rehearsal; there write_betons.py and evaluate.py run in the worker's process (``_in_process``). The runs go through
the shipped experiments (Hydra composition, ``gsam.run.experiment.run``), changed only in size and length.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "bench"))  # bench_train, the kit's bench parts


@dataclasses.dataclass(frozen=True)
class Sizes:
    classes: int
    train_per_class: int
    val_per_class: int
    image: tuple[int, int]  # width, height of the written JPEGs
    batch: int
    steps: int
    img_size: int | None  # None: the model's own (224)
    workers: int
    bench: list  # bench_train.py arguments


def sizes(tiny: bool) -> Sizes:
    if tiny:
        return Sizes(4, 16, 4, (80, 60), 8, 3, 32, 1,
                     ["--img-size", "32", "--batch", "4", "--steps", "1", "--rounds", "1", "--warmup", "1",
                      "--data-steps", "1", "--search-every", "10", "--amp", "none", "--m", "2", "--profile-steps", "1"])
    workers = max(1, min(12, (os.cpu_count() or 2) - 2))
    return Sizes(20, 100, 25, (500, 375), 256, 50, None, workers,
                 ["--batch", "256", "--m", "32", "--steps", "10", "--data-steps", "40"])


@dataclasses.dataclass(frozen=True)
class Part:
    fn: Callable
    limit_s: int  # the supervisor kills a part that runs longer (full size; the rehearsal's are shorter)


class Ctx:
    """What every part gets: the command line, the sizes and the scratch folders."""

    def __init__(self, args):
        self.args, self.size, self.work = args, sizes(args.tiny), args.work
        self.betons, self.images, self.runs = self.work / "betons", self.work / "imagenet", self.work / "runs"

    def overrides(self, experiment: str, name: str, loader: str = "ffcv", micro: int | None = None) -> list[str]:
        """The experiment at the kit's size; Table 1's sam.m = 32 stays (8 groups of the batch of 256), the tiny
        batch of 8 has 2 groups of 4. ``micro``: data.max_device_batch (default: the whole batch)."""
        s = self.size
        ov = [f"+experiment={experiment}", f"output_dir={self.runs / name}", f"train.device={self.args.device}",
              f"data.num_classes={s.classes}", f"data.batch_size={s.batch}",
              f"data.max_device_batch={micro or s.batch}",
              f"data.eval_batch_size={max(s.batch, 50)}", f"data.num_workers={s.workers}",
              f"train.max_steps={s.steps}", "train.progress=false", "logger.wandb.mode=offline",
              "eval.real_labels=null", "train.eval_every_epochs=1000"]
        ov += [f"data.betons={self.betons}"] if loader == "ffcv" else ["data.loader=folder", f"data.root={self.images}"]
        if s.img_size and not experiment.endswith("_vanilla"):
            ov.append(f"sam.m={s.batch // 2}")
        if s.img_size and experiment.startswith("resnet"):  # BatchNorm over the tiny group, as over m at full size
            ov.append(f"model.bn_images={s.batch // 2}")
        if s.img_size:  # tiny: 32 px, narrow, two blocks (ResNets one bottleneck per stage: four stages, BN, stride)
            from bench_train import TINY_RESNET_CHANNELS, TINY_RESNET_LAYERS, TINY_VIT

            ov.append(f"data.img_size={s.img_size}")
            family = experiment.split("_")[0].rstrip("0123456789")  # vit, mixer, resnet (resnet50_xsam: resnet)
            if family == "vit":
                ov += [f"++model.kwargs.img_size={s.img_size}",
                       *(f"++model.kwargs.{k}={v}" for k, v in TINY_VIT.items())]
            elif family == "mixer":  # timm's mixer_*_224 fix num_blocks: the generic MlpMixer, 2 blocks
                ov += ["model.name=mlp_mixer", f"++model.kwargs.img_size={s.img_size}", "++model.kwargs.num_blocks=2",
                       "++model.kwargs.patch_size=16", "++model.kwargs.embed_dim=64"]
            elif family == "resnet":
                ov += [f"++model.kwargs.layers={list(TINY_RESNET_LAYERS)}",
                       f"++model.kwargs.channels={list(TINY_RESNET_CHANNELS)}"]
        return ov


# ----------------------------------------------------------------------------------------------- parts

def part_env(ctx: Ctx) -> dict:
    import importlib.metadata as md
    import platform

    import torch

    figs = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "cpus": os.cpu_count(), "host": platform.node()}
    for pkg in ("torchvision", "timm", "numpy", "numba", "ffcv", "hydra-core", "omegaconf", "wandb", "submitit"):
        try:
            figs[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            figs[pkg] = None
    if ctx.args.device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda but torch.cuda.is_available() is False")
        p = torch.cuda.get_device_properties(0)
        figs.update(gpu=p.name, gpu_mem_gb=round(p.total_memory / 2**30, 1), capability=f"{p.major}.{p.minor}",
                    sms=p.multi_processor_count, bf16=torch.cuda.is_bf16_supported())
    else:
        figs["gpu"] = None
    missing = [k for k in ("ffcv", "hydra-core", "wandb", "submitit") if figs[k] is None]
    if missing:
        raise RuntimeError(f"not installed: {missing} (the bundle of scripts/gpu/gpu_bundle.sh)")
    return figs


def part_data(ctx: Ctx) -> dict:
    from gpu_check_data import write_imagenet_like

    s = ctx.size
    t0 = time.perf_counter()
    n = write_imagenet_like(ctx.images, s.classes, s.train_per_class, s.val_per_class, s.image,
                            workers=os.cpu_count() or 2)
    t_images = time.perf_counter() - t0
    argv = ["--imagenet", str(ctx.images), "--out", str(ctx.betons), "--workers", str(max(s.workers, 2)),
            "--no-progress"]
    _run_script(ctx, "scripts/write_betons.py", argv, lambda a: _script("scripts/write_betons.py").main(a))
    sizes_mb = {p.stem: round(p.stat().st_size / 2**20, 1) for p in sorted(ctx.betons.glob("*.beton"))}
    return {"images": n, "image_size": list(s.image), "write_images_s": round(t_images, 1),
            "write_betons_s": round(time.perf_counter() - t0 - t_images, 1), "beton_mb": sizes_mb}


def _run_script(ctx: Ctx, script: str, argv: list[str], main: Callable[[list[str]], int | None], **run_kw) -> str:
    """``script`` (a path under the repository) with ``argv``: its own process on the GPU machine; in the rehearsal
    (``--tiny``) ``main(argv)`` in this process (see ``_in_process``). Returns what it printed (stdout, then
    stderr); RuntimeError with the tail of it when it fails."""
    if ctx.args.tiny:
        returncode, output = _in_process(main, argv)
    else:
        proc = subprocess.run([sys.executable, str(ROOT / script), *argv], capture_output=True, text=True, **run_kw)
        returncode, output = proc.returncode, proc.stdout + proc.stderr
    if returncode != 0:
        raise RuntimeError(f"{Path(script).name} failed ({returncode}):\n{output[-6000:]}")
    return output


def _in_process(main: Callable[[list[str]], int | None], argv: list[str]) -> tuple[int, str]:
    """(exit status, what it printed) of a script's ``main`` run in this process. The rehearsal runs write_betons.py,
    evaluate.py and kill_resume's resumed train.py this way: a process of their own would import torch, Hydra, timm
    and FFCV again (FFCV's import alone compiles a numba typed dict), 7 to 10 s a process on 2 cores, most of a tiny
    part. The GPU run keeps their processes; the killed train.py stays a process here too (the kill is the point)."""
    import contextlib
    import io

    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                returncode = main(argv) or 0
            except SystemExit as e:  # argparse's exits, evaluate.py's exit 2
                returncode = e.code if isinstance(e.code, int) else 1
    finally:
        print(out.getvalue(), end="", flush=True)  # into gpu_check.log, as the process's output would be
    return returncode, out.getvalue()


def _script(name: str):
    """A script of the repository (write_betons.py, evaluate.py) as a module; its ``__main__`` block does not run."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"gpu_check_{Path(name).stem}", ROOT / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _hydra_main_in_process(script: str, overrides: list[str]) -> None:
    """train.py's or evaluate.py's own ``main`` on the config its command line would compose (Hydra's ``main``
    passes a given config straight to the function it decorates)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    _script(script).main(cfg)


def _train(ctx: Ctx, experiment: str, name: str, extra: list[str], loader: str = "ffcv", micro: int | None = None
           ) -> dict:
    from hydra import compose, initialize_config_dir

    from gpu_check_report import train_figures
    from gsam.run.experiment import run

    import torch

    if ctx.args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=ctx.overrides(experiment, name, loader, micro) + extra)
    t0 = time.perf_counter()
    results = run(cfg)
    figs = {"overrides": extra, "loader": loader, "wall_s": round(time.perf_counter() - t0, 1),
            **train_figures(ctx.runs / name, results)}
    if figs["steps"] != ctx.size.steps:
        raise RuntimeError(f"{figs['steps']} steps done, {ctx.size.steps} asked")
    if not figs["losses_finite"]:
        raise RuntimeError(f"non-finite training loss logged: {figs}")
    if ctx.args.device == "cuda":
        torch.cuda.empty_cache()
    return figs


def part_vit_b32_gsam(ctx: Ctx) -> dict:
    return _train(ctx, "vit_b32_gsam", "vit_b32_gsam", ["train.amp=bf16"])


def part_resnet50_xsam(ctx: Ctx) -> dict:
    # alpha* searched at the first step of every epoch (7 steps at full size: 8 searches in 50 steps)
    figs = _train(ctx, "resnet50_xsam", "resnet50_xsam", ["train.amp=bf16"])
    if figs["searches"] < 1:
        raise RuntimeError(f"XSAM searched alpha* {figs['searches']} times in {figs['steps']} steps")
    if not figs["channels_last"]:
        raise RuntimeError("resnet50 ran without channels_last")
    return figs


def part_mixer_b16_sam_compile(ctx: Ctx) -> dict:
    # the rehearsal traces and differentiates with aot_eager: inductor's C++ code generation takes a minute on
    # 2 cores and what it generates on a GPU (Triton) is not what it generates on a CPU anyway
    backend = "aot_eager" if ctx.args.device == "cpu" else "true"
    return _train(ctx, "mixer_b16_sam", "mixer_b16_sam_compile", [f"train.compile={backend}"], loader="folder")


def part_vit_s16_gsam_fp16(ctx: Ctx) -> dict:
    return _train(ctx, "vit_s16_gsam", "vit_s16_gsam_fp16", ["train.amp=fp16"])


def part_groups(ctx: Ctx) -> dict:
    """Perturbation groups larger than a micro-batch: each group of sam.m images accumulates two micro-batches
    (every other run has one micro-batch per group)."""
    micro = ctx.size.batch // 4 if ctx.args.tiny else 32  # m = batch / 2 (tiny) or 64
    figs = _train(ctx, "vit_s32_gsam", "vit_s32_gsam_groups", ["train.amp=bf16"], micro=micro)
    return {"max_device_batch": micro, **figs}


def _child_env() -> dict:
    """This process's environment without its wandb service: a child must start its own, or a resumed run
    finds the killed run's id still registered there ("run ID ... is in use")."""
    return {k: v for k, v in os.environ.items() if not k.startswith("WANDB_SERVICE")}


def part_kill_resume(ctx: Ctx) -> dict:
    from gpu_check_report import kill_resume_figures, train_records

    steps, every = (8, 2) if ctx.args.tiny else (60, 10)
    name = "kill_resume"
    cmd = [sys.executable, str(ROOT / "train.py"), *ctx.overrides("vit_s32_gsam", name),
           f"train.max_steps={steps}", f"train.checkpoint_every_steps={every}", "train.amp=bf16"]
    run_dir = ctx.runs / name
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(run_dir.parent / f"{name}.first.log", "w") as log:  # a file: a pipe nobody reads can fill and block
        first = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                 env=_child_env())
    _kill_after_checkpoint(first, run_dir, every)
    killed = train_records(run_dir)  # before the resume cuts the replayed steps from metrics.jsonl
    output = _run_script(ctx, "train.py", cmd[2:], lambda a: _hydra_main_in_process("train.py", a), cwd=ROOT,
                         env=_child_env())  # the resumed run
    return kill_resume_figures(run_dir, killed, steps, output, ctx.args.device)


def _kill_after_checkpoint(proc: subprocess.Popen, run_dir: Path, every: int) -> None:
    """kill -9 the run's process group once a checkpoint exists and a step past it is logged."""
    from gpu_check_report import train_records

    last = run_dir / "checkpoints" / "last.pt"
    while proc.poll() is None:
        steps = [r["step"] for r in train_records(run_dir)] if (run_dir / "metrics.jsonl").exists() else []
        if last.exists() and steps and max(steps) > every:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return
        time.sleep(0.05)
    log = (run_dir.parent / f"{run_dir.name}.first.log").read_text()[-3000:]
    raise RuntimeError(f"the run ended (exit {proc.returncode}) before it could be killed:\n{log}")


def part_evaluate(ctx: Ctx) -> dict:
    run_dir = ctx.runs / "kill_resume"
    trained = json.loads((run_dir / "results.json").read_text())
    (run_dir / "results.json").rename(run_dir / "results-train.json")
    overrides = [*ctx.overrides("vit_s32_gsam", "kill_resume"), "train.amp=bf16"]
    t0 = time.perf_counter()
    _run_script(ctx, "evaluate.py", overrides, lambda a: _hydra_main_in_process("evaluate.py", a), cwd=ROOT,
                env=_child_env())
    evaluated = json.loads((run_dir / "results.json").read_text())
    figs = {"wall_s": round(time.perf_counter() - t0, 1), "val_top1": evaluated.get("imagenet"),
            "val_top1_at_end_of_training": trained.get("imagenet"), "step": evaluated.get("step")}
    if figs["val_top1"] is None:
        raise RuntimeError(f"evaluate.py wrote no ImageNet top-1: {evaluated}")
    return figs


def _bench(ctx: Ctx, model: str) -> dict:
    from bench_train import bench, parse_args

    args = parse_args(["--models", model, "--device", ctx.args.device, "--amp", "bf16",
                       "--betons", str(ctx.betons), "--workers", str(ctx.size.workers),
                       "--profile", str(ctx.args.out / "profile.txt"), *ctx.size.bench]
                      + (["--tiny-depth"] if ctx.args.tiny else []))
    return bench(args)[model]


def part_bench_vit_b32(ctx: Ctx) -> dict:
    return _bench(ctx, "vit_b32")


def part_bench_resnet50(ctx: Ctx) -> dict:
    return _bench(ctx, "resnet50")


PARTS = {  # in the order of what a short GPU session needs most
    "env": Part(part_env, 60),
    "data": Part(part_data, 120),
    "vit_b32_gsam": Part(part_vit_b32_gsam, 120),
    "resnet50_xsam": Part(part_resnet50_xsam, 120),
    "bench_vit_b32": Part(part_bench_vit_b32, 120),
    "bench_resnet50": Part(part_bench_resnet50, 120),
    "vit_s16_gsam_fp16": Part(part_vit_s16_gsam_fp16, 100),
    "kill_resume": Part(part_kill_resume, 150),
    "evaluate": Part(part_evaluate, 60),
    "mixer_b16_sam_compile": Part(part_mixer_b16_sam_compile, 200),
    "groups": Part(part_groups, 120),
}


def run_part(name: str, args) -> dict:
    """{part, ok, seconds, figures, error}: an exception is a failure with the tail of its traceback."""
    t0 = time.perf_counter()
    try:
        figures, error = PARTS[name].fn(Ctx(args)), None
    except BaseException as e:  # noqa: BLE001 - every failure is reported, the next part still runs
        if isinstance(e, KeyboardInterrupt):
            raise
        figures, error = {}, "\n".join(traceback.format_exc().splitlines()[-25:])
    return {"part": name, "ok": error is None, "seconds": round(time.perf_counter() - t0, 1), "figures": figures,
            "error": error}
