"""Training throughput (images/s) of vanilla, SAM, GSAM and XSAM through the trainer's own step, in one run.

    python scripts/bench_train.py --device cuda --amp bf16 --batch 256                    # GPU
    .venv/bin/python scripts/bench_train.py --models vit_b32 --img-size 64 --batch 8 --steps 2   # CPU

Synthetic data already on the device (this measures the model and the optimizer, not the loader);
the recipe of each model (configs/model, configs/optimizer): channels_last for ResNets, the
big_vision head and sigmoid loss for ViTs, AdamW or SGD. XSAM searches alpha* once per
``--search-every`` steps, amortised from a measured search step. (timm's own ``train.py`` is a
repository script that the timm wheel does not ship, so it is not timed here.)
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gsam.engine import loss_function, make_closure  # noqa: E402
from gsam.optim.factory import build_optimizer  # noqa: E402
from models import build_model  # noqa: E402

METHODS = {"vanilla": {"name": "none"}, "SAM": {"name": "sam", "rho_max": 0.05},
           "GSAM": {"name": "gsam", "rho_max": 0.05, "alpha": 0.4},
           "XSAM": {"name": "xsam", "rho_max": 0.05, "rho_probe": 0.1, "alpha": 1.5, "search_every": 0}}


def time_steps(fn, steps: int, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / steps


def main() -> None:
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
    args = ap.parse_args()
    device = torch.device(args.device)
    amp = torch.bfloat16 if args.amp == "bf16" else None
    dev_name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU x{torch.get_num_threads()}"
    print(f"# {dev_name}, torch {torch.__version__}, batch {args.batch}, {args.img_size}px, amp={args.amp}, "
          f"{args.rounds} rounds x {args.steps} steps, median")
    for short in args.models:
        mcfg = OmegaConf.load(ROOT / "configs" / "model" / f"{short}.yaml")
        ocfg = OmegaConf.load(ROOT / "configs" / "optimizer" / ("sgd.yaml" if mcfg.family == "resnet" else "adamw.yaml"))
        if mcfg.family != "resnet":
            mcfg.kwargs.img_size = args.img_size
        torch.manual_seed(0)
        model = build_model(mcfg, num_classes=1000).to(device)
        cl = mcfg.family == "resnet"
        if cl:
            model = model.to(memory_format=torch.channels_last)
        x = torch.randn(args.batch, 3, args.img_size, args.img_size, device=device)
        x = x.contiguous(memory_format=torch.channels_last) if cl else x
        y = torch.randint(0, 1000, (args.batch,), device=device)
        loss_fn = loss_function(mcfg.loss, 1000)
        steps = {}
        for name, scfg in METHODS.items():
            opt = build_optimizer(model, ocfg, scfg)
            steps[name] = (lambda o=opt: o.step(make_closure(model, o, loss_fn, x, y, 1, amp)))
        search = build_optimizer(model, ocfg, {**METHODS["XSAM"], "search_every": 1})
        steps["XSAM search step"] = lambda: search.step(make_closure(model, search, loss_fn, x, y, 1, amp))
        for fn in steps.values():
            for _ in range(args.warmup if fn is not steps["XSAM search step"] else 1):
                fn()
        times = {k: [] for k in steps}
        for _ in range(args.rounds):
            for k, fn in steps.items():
                times[k].append(time_steps(fn, 1 if k == "XSAM search step" else args.steps, device))
        t = {k: statistics.median(v) for k, v in times.items()}
        n = args.search_every
        t["XSAM"] = ((n - 1) * t["XSAM"] + t.pop("XSAM search step")) / n
        print(f"{short} ({mcfg.name}):")
        for k, v in t.items():
            print(f"  {k:>8s}: {args.batch / v:9.1f} img/s   ({v / t['vanilla']:.2f}x vanilla's step time)")
        del model, steps, search
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
