"""Training throughput (images/s), peak memory and data wait of vanilla, SAM, GSAM, XSAM and the efficient variants
(every-k, LookSAM, LookGSAM at k = 5; MESA) through the trainer's own step, in one run.

    python scripts/bench/bench_train.py --device cuda --amp bf16 --batch 256                    # GPU
    python scripts/bench/bench_train.py --device cuda --batch 256 --betons /data/betons          # + FFCV data wait
    python scripts/bench/bench_train.py --device cuda --batch 256 --m 32    # perturbation groups of 32 (Table 1's sam.m)
    .venv/bin/python scripts/bench/bench_train.py --models vit_b32 --img-size 64 --batch 8 --steps 2   # CPU

Speed: synthetic data already on the device (the model and the optimizer, not the loader); the recipe of
each model (configs/model, configs/optimizer): channels_last for ResNets, the big_vision head and sigmoid
loss for ViTs, AdamW or SGD. The methods are timed in interleaved rounds (median); XSAM searches alpha*
once per ``--search-every`` steps (an ImageNet epoch at batch 4096 = 309 steps), amortised from a measured
search step. Memory (CUDA): each method alone with its own optimizer, the peak of one step after warm-up;
GSAM's bound is vanilla's peak + 2 parameter sizes + the activations of one pass (vanilla's peak minus the
memory held before its step). Data wait (``--betons``): the FFCV train loader feeding vanilla and GSAM
steps; the share of wall time spent waiting for the next batch, overall and without each epoch's first
batch (the loader's start, which a small set repeats every few steps and ImageNet once per 5,000).
(timm's own ``train.py`` is a repository script that the timm wheel does not ship, so it is not timed here.)
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[2]
# --tiny-depth (the GPU kit's CPU rehearsal, scripts/gpu/gpu_check_parts.py): every stage and kind of block once or
# twice, at widths where a step takes milliseconds and the optimizer's passes over the weights cost nothing
TINY_RESNET_LAYERS = (1, 1, 1, 1)  # ResNets: every stage (stride, BN, bottleneck), once
TINY_RESNET_CHANNELS = (8, 16, 32, 64)  # timm's (64, 128, 256, 512) / 8: 256 features, not 2048
TINY_VIT = {"depth": 2, "embed_dim": 64, "num_heads": 2}  # ViTs: two blocks of width 64 (ViT-B: 12 of 768)
sys.path.insert(0, str(ROOT))

from gsam.evaluation.tables import FAMILY_RECIPES  # noqa: E402
from gsam.run.engine import loss_function, make_closures  # noqa: E402
from gsam.optim.factory import build_optimizer  # noqa: E402
from gsam.models import build_model, model_data_config  # noqa: E402

METHODS = {"vanilla": {"name": "none"}, "SAM": {"name": "sam", "rho_max": 0.05},
           "GSAM": {"name": "gsam", "rho_max": 0.05, "alpha": 0.4},
           "XSAM": {"name": "xsam", "rho_max": 0.05, "rho_probe": 0.1, "alpha": 1.5, "search_every": 0},
           # the efficient variants at k = 5, timed over whole cycles (--steps rounded up to a multiple of k)
           "every-5": {"name": "every_k", "rho_max": 0.05, "k": 5},
           "LookSAM-5": {"name": "looksam", "rho_max": 0.05, "k": 5, "alpha": 0.7},
           "LookGSAM-5": {"name": "lookgsam", "rho_max": 0.05, "k": 5, "alpha": 0.7, "gsam_alpha": 0.4},
           "MESA": {"name": "mesa", "lam": 0.8, "tau": 5.0, "decay": 0.9998, "start_step": 0}}
# the cost targets per step: SAM's two passes at most 2.05x vanilla, GSAM and XSAM within 2% of SAM, the efficient
# variants at most 1.3x vanilla
RATIOS = [("SAM", "vanilla", 2.05), ("GSAM", "SAM", 1.02), ("XSAM", "SAM", 1.02), ("every-5", "vanilla", 1.3),
          ("LookSAM-5", "vanilla", 1.3), ("LookGSAM-5", "vanilla", 1.3), ("MESA", "vanilla", 1.3)]


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["vit_b32", "resnet50"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--amp", choices=["bf16", "none"], default="bf16" if torch.cuda.is_available() else "none")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--search-every", type=int, default=309)
    ap.add_argument("--m", type=int, default=None, help="images per perturbation group (sam.m); default: the whole "
                    "--batch. With --m, SAM with one group is timed too (the groups' cost)")
    ap.add_argument("--betons", type=Path, help="measure the data wait through FFCV on <betons>/train.beton")
    ap.add_argument("--data-steps", type=int, default=40, help="steps per method of the data-wait measurement")
    ap.add_argument("--workers", type=int, default=12, help="FFCV loader threads for the data-wait measurement")
    ap.add_argument("--tiny-depth", action="store_true",
                    help="narrow two-block ViTs and Mixers, narrow one-bottleneck-per-stage ResNets (CPU rehearsals)")
    ap.add_argument("--classes", type=int, default=1000, help="classes of the model's head (ImageNet: 1000)")
    ap.add_argument("--extra", action="append", default=[], metavar="LABEL=JSON",
                    help='one more method to time, e.g. every-2=\'{"name": "every_k", "rho_max": 0.1, "k": 2}\' '
                         "(its step time over vanilla's is reported as LABEL/vanilla); repeatable")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON")
    ap.add_argument("--profile", type=Path, help="write torch.profiler's top operators of each method's step here")
    ap.add_argument("--profile-steps", type=int, default=3, help="steps per method under the profiler")
    args = ap.parse_args(argv)
    if args.m is not None and (args.m <= 0 or args.batch % args.m):
        ap.error(f"--m {args.m} must divide --batch {args.batch}")
    args.groups = args.batch // args.m if args.m else 1
    args.extra = dict(_extra(ap, e) for e in args.extra)
    return args


def _extra(ap: argparse.ArgumentParser, text: str) -> tuple[str, dict]:
    """``LABEL=JSON`` of --extra as (label, the sam config of the method)."""
    label, _, spec = text.partition("=")
    try:
        method = json.loads(spec)
    except json.JSONDecodeError as e:
        ap.error(f"--extra {text!r}: not LABEL=JSON ({e})")
    if not label or not isinstance(method, dict) or "name" not in method:
        ap.error(f"--extra {text!r}: LABEL=JSON with a JSON object that has a 'name' (a sam.name)")
    return label, method


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(fn, steps: int, device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / steps


def _setup(short: str, args, device):
    """(model, optimizer config, loss, channels_last) of a model's recipe at the bench's size."""
    mcfg = OmegaConf.load(ROOT / "configs" / "model" / f"{short}.yaml")
    recipe = OmegaConf.load(ROOT / "configs" / "recipe" / f"{FAMILY_RECIPES[mcfg.family]}.yaml")
    optimizer = next(d["override /optimizer"] for d in recipe.defaults if "override /optimizer" in d)
    ocfg = OmegaConf.load(ROOT / "configs" / "optimizer" / f"{optimizer}.yaml")
    if mcfg.family == "resnet" and args.tiny_depth:  # one narrow bottleneck per stage (timm's resnet* take both)
        mcfg.kwargs = {**(mcfg.get("kwargs") or {}), "layers": list(TINY_RESNET_LAYERS),
                       "channels": list(TINY_RESNET_CHANNELS)}
    if mcfg.family != "resnet":
        mcfg.kwargs.img_size = args.img_size
        if args.tiny_depth and mcfg.family == "vit":
            mcfg.kwargs.update(TINY_VIT)
        elif args.tiny_depth:  # timm's mixer_*_224 fix num_blocks: the generic MlpMixer (models/build.py)
            mcfg.name, mcfg.kwargs = "mlp_mixer", {"img_size": args.img_size, "num_blocks": 2, "embed_dim": 64}
    torch.manual_seed(0)
    model = build_model(mcfg, num_classes=args.classes).to(device)
    cl = mcfg.channels_last is True
    if cl:
        model = model.to(memory_format=torch.channels_last)
    return mcfg, model, ocfg, loss_function(mcfg.loss, args.classes), cl


def _step_fn(model, opt, loss_fn, amp, groups: int = 1):
    """One trainer step on (x, y): ``groups`` perturbation groups (vanilla always one, as in the trainer)."""
    return lambda x, y: opt.step(make_closures(model, opt, loss_fn, x, y, groups, 1, amp))


def time_methods(model, ocfg, loss_fn, x, y, amp, args, device) -> dict:
    """Median step time (s) of each method, XSAM's with its amortised search."""
    steps, methods = {}, {**METHODS, **args.extra}
    for name, scfg in methods.items():
        fn = _step_fn(model, build_optimizer(model, ocfg, scfg), loss_fn, amp, args.groups)
        steps[name] = lambda fn=fn: fn(x, y)
    if args.groups > 1:
        fn = _step_fn(model, build_optimizer(model, ocfg, METHODS["SAM"]), loss_fn, amp)
        steps["SAM one group"] = lambda fn=fn: fn(x, y)
    search_fn = _step_fn(model, build_optimizer(model, ocfg, {**METHODS["XSAM"], "search_every": 1}), loss_fn, amp,
                         args.groups)
    steps["XSAM search step"] = lambda: search_fn(x, y)
    for k, fn in steps.items():
        for _ in range(1 if k == "XSAM search step" else args.warmup):
            fn()
    times = {k: [] for k in steps}
    cycle = {k: int(methods[k].get("k", 1)) for k in steps if k in methods}
    n_of = {k: 1 if k == "XSAM search step" else -(-args.steps // cycle.get(k, 1)) * cycle.get(k, 1) for k in steps}
    for _ in range(args.rounds):
        for k, fn in steps.items():
            times[k].append(time_steps(fn, n_of[k], device))
    t = {k: statistics.median(v) for k, v in times.items()}
    n = args.search_every
    t["XSAM"] = ((n - 1) * t["XSAM"] + t.pop("XSAM search step")) / n
    return t


def peak_memory(model, ocfg, loss_fn, x, y, amp, device, groups: int = 1) -> dict:
    """Peak GB of one step of each method alone (its optimizer only), and GSAM's bound."""
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    peaks, held = {}, {}
    for name, scfg in METHODS.items():
        opt = build_optimizer(model, ocfg, scfg)
        fn = _step_fn(model, opt, loss_fn, amp, groups)
        for _ in range(2):
            fn(x, y)
        gc.collect()
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        held[name] = torch.cuda.memory_allocated()
        fn(x, y)
        torch.cuda.synchronize()
        peaks[name] = torch.cuda.max_memory_allocated()
        del opt, fn
        model.zero_grad(set_to_none=True)
    activations = peaks["vanilla"] - held["vanilla"]
    bound = peaks["vanilla"] + 2 * params + activations
    gb = 2 ** 30
    return {"params_gb": round(params / gb, 3), "activations_gb": round(activations / gb, 3),
            **{f"peak_gb_{k}": round(v / gb, 3) for k, v in peaks.items()},
            **{f"peak_over_vanilla_{k}": round(peaks[k] / peaks["vanilla"], 3) for k in peaks},
            "gsam_bound_gb": round(bound / gb, 3), "gsam_memory_met": peaks["GSAM"] <= bound}


def data_wait(model, mcfg, ocfg, loss_fn, amp, args, device, channels_last: bool) -> dict:
    """Share of the wall time spent waiting for FFCV batches while vanilla and GSAM steps run."""
    from gsam.data.ffcv_loaders import FFCVLoader

    dcfg = model_data_config(model)
    loader = FFCVLoader(args.betons / "train.beton", train=True, img_size=args.img_size, mean=dcfg["mean"],
                        std=dcfg["std"], batch=args.batch, rank=0, world=1, seed=0, num_workers=min(args.workers, os.cpu_count() or 1),
                        device=device, channels_last=channels_last, min_crop_scale=0.08, crop_pct=0.875,
                        os_cache=True)
    out = {}
    for name in ("vanilla", "GSAM"):
        fn = _step_fn(model, build_optimizer(model, ocfg, METHODS[name]), loss_fn, amp, args.groups)
        waits, firsts, total, epoch, done = [], [], 0.0, 0, -min(3, args.data_steps)  # warm-up steps
        while done < args.data_steps:
            loader.sampler.set_epoch(epoch)
            epoch += 1
            t_req = time.perf_counter()
            for i, (x, y) in enumerate(loader):
                t_got = time.perf_counter()
                fn(x, y)
                _sync(device)
                t_end = time.perf_counter()
                if done >= 0:
                    waits.append(t_got - t_req)
                    firsts.append(i == 0)
                    total += t_end - t_req
                done += 1
                t_req = time.perf_counter()
                if done >= args.data_steps:
                    break
        steady_total = total - sum(w for w, f in zip(waits, firsts) if f)
        out[f"data_wait_{name}"] = round(sum(waits) / total, 4)
        out[f"data_wait_steady_{name}"] = round(sum(w for w, f in zip(waits, firsts) if not f) / steady_total, 4)
        out[f"data_img_s_{name}"] = round(len(waits) * args.batch / total, 1)
    return out


def profile_methods(model, ocfg, loss_fn, x, y, amp, device, path: Path, groups: int = 1, steps: int = 3) -> None:
    """Where a step's time goes: the operators with the most self time (device time on a GPU) per method."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    with open(path, "a") as f:
        for name, scfg in METHODS.items():
            fn = _step_fn(model, build_optimizer(model, ocfg, scfg), loss_fn, amp, groups)
            fn(x, y)
            _sync(device)
            with profile(activities=acts) as prof:
                for _ in range(steps):
                    fn(x, y)
                _sync(device)
            f.write(f"\n## {name}: {steps} steps, batch {x.shape[0]}\n")
            f.write(prof.key_averages().table(sort_by=key, row_limit=25, max_name_column_width=60) + "\n")


def bench(args: argparse.Namespace) -> dict:
    """{model: figures}; also printed."""
    device = torch.device(args.device)
    amp = torch.bfloat16 if args.amp == "bf16" else None
    dev_name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU x{torch.get_num_threads()}"
    print(f"# {dev_name}, torch {torch.__version__}, batch {args.batch}, {args.img_size}px, amp={args.amp}, "
          f"{args.rounds} rounds x {args.steps} steps, median, perturbation groups of {args.m or args.batch}",
          flush=True)
    figures = {}
    for short in args.models:
        mcfg, model, ocfg, loss_fn, cl = _setup(short, args, device)
        x = torch.randn(args.batch, 3, args.img_size, args.img_size, device=device)
        x = x.contiguous(memory_format=torch.channels_last) if cl else x
        y = torch.randint(0, args.classes, (args.batch,), device=device)
        t = time_methods(model, ocfg, loss_fn, x, y, amp, args, device)
        figs = {"model": mcfg.name, "batch": args.batch, "img_size": args.img_size, "m": args.m or args.batch,
                **{f"img_s_{k}": round(args.batch / v, 1) for k, v in t.items()},
                **{f"{a}/{b}": round(t[a] / t[b], 3) for a, b, _ in RATIOS},
                **{f"{a}/vanilla": round(t[a] / t["vanilla"], 3) for a in args.extra}}
        figs.update({f"{a}/{b} met": t[a] / t[b] <= target for a, b, target in RATIOS})
        if "SAM one group" in t:
            figs["SAM/SAM one group"] = round(t["SAM"] / t["SAM one group"], 3)
        if device.type == "cuda":
            figs.update(peak_memory(model, ocfg, loss_fn, x, y, amp, device, args.groups))
        if args.betons:
            figs.update(data_wait(model, mcfg, ocfg, loss_fn, amp, args, device, cl))
        if args.profile:
            profile_methods(model, ocfg, loss_fn, x, y, amp, device, args.profile.with_name(
                f"{args.profile.stem}_{short}{args.profile.suffix}"), args.groups, args.profile_steps)
        figures[short] = figs
        print(f"{short} ({mcfg.name}):")
        for k, v in t.items():
            print(f"  {k:>8s}: {args.batch / v:9.1f} img/s   ({v / t['vanilla']:.2f}x vanilla's step time)")
        for k, v in figs.items():
            if "/" in k or k.startswith(("peak", "data", "gsam", "params", "activations")):
                print(f"  {k}: {v}")
        del model, x, y
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    bench(parse_args())
