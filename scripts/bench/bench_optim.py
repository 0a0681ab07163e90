"""Step time and memory of SAM, GSAM, XSAM and the efficient variants (every-k, LookSAM, LookGSAM, MESA) relative
to vanilla training, measured in one run.

    .venv/bin/python scripts/bench/bench_optim.py --model resnet18 --img-size 64 --batch 32          # CPU
    python scripts/bench/bench_optim.py --device cuda --model vit_base_patch32_224 --batch 256 --amp bf16

Rounds interleave the methods (vanilla, SAM, GSAM, XSAM without a search, one XSAM search step),
rotating their order, so that drifting machine load and allocator effects hit all of them alike; the median per-step time of each is reported.
The periodic variants run one whole cycle of ``--k`` steps per round (their cost per step is the cycle's mean),
MESA ``--steps`` steps with its KL term on; their table gives the cost per step over vanilla's of the same
rounds, over SAM's and GSAM's, and the prediction from the parts: fwd+bwd passes per step (1 + 1/k; MESA 1),
forward-only passes (MESA's teacher: 1), the base step and the variant's own vector work.
XSAM's cost at each ``--search-every`` N is amortised from the two measured kinds of step:
(N-1) plain steps + 1 search step, over N. Held memory is counted by walking the optimizer object
for tensors that are neither parameters nor gradients nor the base optimizer's state.

Each ratio is printed three ways: the ratio of the medians; the median of the ratios paired within
a round, with a 95% bootstrap interval over the rounds; and the ratio predicted from a decomposition
of the step (model fwd+bwd, base optimizer step, the method's own vector work measured with a
closure of negligible cost). A target is "met" or "missed" only when the whole interval is on one
side of it; otherwise the machine was too noisy to tell in this run ("undecided").

``--m M`` times perturbation groups instead: each method with ``--batch / M`` groups of M
images (``opt.step([closure_1, ..., closure_G])``) against one group of the whole batch, on the same
weights, in interleaved rounds; and the peak memory of the grouped step over the one-group step,
with a closure of negligible cost (the optimizer's buffers alone) and with the model (where the
groups' smaller activations count too). On the CPU the peak comes from the profiler's allocation
events, on CUDA from the allocator's statistics.

    .venv/bin/python scripts/bench/bench_optim.py --model resnet18 --img-size 64 --batch 256 --m 64
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import gsam  # noqa: E402


def held_tensors(obj, params: set[int], seen: set[int] | None = None, root: bool = True) -> list[torch.Tensor]:
    """Every tensor reachable from ``obj`` except parameters and what the model or base optimizer hold."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return [] if id(obj) in params else [obj]
    if not root and isinstance(obj, (torch.nn.Module, torch.optim.Optimizer)):
        return []  # the model and the base optimizer are not the wrapper's memory
    items = []
    if isinstance(obj, dict):
        items = list(obj.keys()) + list(obj.values())
    elif isinstance(obj, (list, tuple, set)):
        items = list(obj)
    elif hasattr(obj, "__dict__"):
        items = list(vars(obj).values())
    return [t for item in items for t in held_tensors(item, params, seen, root=False)]


def bootstrap_median(xs: list[float], n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the median of ``xs`` (resampling the rounds)."""
    import random

    rng = random.Random(seed)
    meds = sorted(statistics.median(rng.choices(xs, k=len(xs))) for _ in range(n))
    return meds[int(0.025 * n)], meds[int(0.975 * n) - 1]


def verdict(interval: tuple[float, float], target: float) -> str:
    lo, hi = interval
    return "met" if hi <= target else "missed" if lo > target else "undecided"


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def closure_on(model, x, y, amp: str, opt=None):
    """The closure convention of gsam/optim/base.py on one batch (or one perturbation group); with ``opt``, its
    ``loss_term`` is added as the trainer's closure adds it (MESA's KL term)."""
    def closure():
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp == "bf16"):
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            term = opt.loss_term(logits, x) if opt is not None else None
            loss = loss if term is None else loss + term
        if torch.is_grad_enabled():
            loss.backward()
        return loss
    return closure


def cheap_closure(params: list[torch.Tensor]):
    """A closure whose forward and backward cost one element-wise pass (loss = sum <p, c>, c random): a step
    with it is the optimizer's own work and buffers, without the model's."""
    consts = [torch.randn_like(p) for p in params]

    def closure():
        loss = sum((p * c).sum() for p, c in zip(params, consts))
        if torch.is_grad_enabled():
            loss.backward()
        return loss
    return closure


def peak_bytes(opt, closure, device) -> int:
    """Peak memory allocated while ``opt.step(closure)`` runs, above what was allocated before it. The
    gradients are let go of first: the profiler cannot see the freeing of memory allocated before it."""
    opt.base_optimizer.zero_grad(set_to_none=True)

    def fn():
        opt.step(closure)
    sync(device)
    if device.type == "cuda":
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # the raw allocation (+) and free (-) events in time order: the per-op attribution of
    # ``prof.events()`` moves frees made outside an op to the start of the enclosing range
    events = [(e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    current = peak = 0
    for _, nbytes in sorted(events):
        current += nbytes
        peak = max(peak, current)
    return peak


def time_rounds(steps: dict, rounds: int, n_of, device) -> dict[str, list[float]]:
    """Seconds per step of each entry, ``n_of(name)`` steps per round, the order rotated every round so
    that no entry always follows the same one."""
    times: dict[str, list[float]] = {k: [] for k in steps}
    names = list(steps)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            n = n_of(name)
            sync(device)
            t0 = time.perf_counter()
            for _ in range(n):
                steps[name]()
            sync(device)
            times[name].append((time.perf_counter() - t0) / n)
    return times


def compare_groups(args, model, x, y, opts: dict, device, param_bytes: int) -> None:
    """Each method with groups of ``args.m`` images against one group of the whole batch."""
    groups = args.batch // args.m
    one, grouped = closure_on(model, x, y, args.amp), [closure_on(model, xg, yg, args.amp)
                                                      for xg, yg in zip(x.split(args.m), y.split(args.m))]
    steps = {f"{k}{tag}": (lambda o=o, c=c: o.step(c)) for k, o in opts.items()
             for tag, c in (("", one), (f" m={args.m}", grouped))}
    for fn in steps.values():  # warm-up; allocates the buffers
        fn()
    times = time_rounds(steps, args.rounds, lambda k: 1 if "search" in k else args.steps, device)
    t = {k: statistics.median(v) for k, v in times.items()}
    print(f"# groups of m={args.m} ({groups} per step) vs one group of {args.batch}: {args.model} "
          f"{args.img_size}px amp={args.amp} on {device_name(device)}, torch {torch.__version__}, "
          f"{args.rounds} rounds x {args.steps} steps, median")
    print(f"{'method':>18s}  one group ms  groups ms  groups/one  paired median [95% CI]")
    for k in opts:
        per_round = [g / o for g, o in zip(times[f"{k} m={args.m}"], times[k])]
        lo, hi = bootstrap_median(per_round)
        print(f"{k:>18s}  {1000 * t[k]:12.1f}  {1000 * t[f'{k} m={args.m}']:9.1f}  "
              f"{t[f'{k} m={args.m}'] / t[k]:10.3f}  {statistics.median(per_round):.3f} [{lo:.3f}, {hi:.3f}]")
    for tag in ("", f" m={args.m}"):
        sam = t[f"SAM{tag}"]
        xsam = {n: ((n - 1) * t[f"XSAM{tag}"] + t[f"XSAM search step{tag}"]) / n for n in args.search_every}
        print(f"{'one group' if not tag else f'groups of {args.m}':>18s}: GSAM/SAM {t[f'GSAM{tag}'] / sam:.3f}, "
              + ", ".join(f"XSAM/SAM search every {n} {v / sam:.3f}" for n, v in xsam.items()))
    cheap = cheap_closure(list(model.parameters()))
    for k, o in opts.items():
        if "search" in k:
            continue
        extra = [(peak_bytes(o, [cheap] * groups, device) - peak_bytes(o, cheap, device)) / param_bytes,
                 (peak_bytes(o, grouped, device) - peak_bytes(o, one, device)) / param_bytes]
        print(f"{k:>5s}: peak of the grouped step over one group, in parameter sizes: {extra[0]:+.2f} (optimizer "
              f"alone, closure of negligible cost), {extra[1]:+.2f} (with the model's activations)")


def efficient_variants(params, base, model, k: int) -> dict:
    """The efficient variants at period ``k`` (MESA: the KL term on from the first step), each on its own base."""
    return {f"every-{k}": gsam.EveryK(params, base(), rho=0.05, k=k, model=model),
            f"LookSAM-{k}": gsam.LookSAM(params, base(), rho=0.05, k=k, alpha=0.7, model=model),
            f"LookGSAM-{k}": gsam.LookSAM(params, base(), rho=0.05, k=k, alpha=0.7, gsam_alpha=0.4, model=model),
            "MESA": gsam.MESA(params, base(), model=model, lam=0.8, tau=5.0)}


def passes_per_step(opt) -> tuple[float, float]:
    """(forward-backward passes, forward-only passes) per step, on average over a cycle."""
    if isinstance(opt, gsam.MESA):
        return 1.0, 1.0  # the student's pass and the teacher's forward
    return 1.0 + 1.0 / opt.k, 0.0  # the full step once in k


def report_variants(variants: dict, times: dict, cheap, parts: dict, device) -> None:
    """Each variant's cost per step relative to vanilla, SAM and GSAM of the same rounds; decomposed into passes
    (fwd+bwd and forward-only, from this run's vanilla and forward timings) and the method's own vector work
    (a cycle of steps with the closure of negligible cost, minus its passes and the base step)."""
    own = {}
    for name, opt in variants.items():
        n = getattr(opt, "k", 1)
        samples = []
        for _ in range(10):
            sync(device)
            t0 = time.perf_counter()
            for _ in range(n):
                opt.step(cheap)
            sync(device)
            samples.append((time.perf_counter() - t0) / n)
        full, _ = passes_per_step(opt)
        own[name] = statistics.median(samples) - full * parts["one_pass"] - parts["base_step"]
    vanilla = parts["fwd_bwd"] + parts["base_step"]
    print(f"efficient variants (cost per step over whole cycles; forward-only pass {1000 * parts['fwd']:.0f} ms):")
    print(f"{'variant':>12s}  passes/step  own ms  /vanilla [95% CI]     /SAM   /GSAM  predicted/vanilla")
    for name, opt in variants.items():
        full, fwd = passes_per_step(opt)
        per_round = [a / b for a, b in zip(times[name], times["vanilla"])]
        lo, hi = bootstrap_median(per_round)
        t = {k: statistics.median(v) for k, v in times.items() if k in (name, "SAM", "GSAM")}
        predicted = (full * parts["fwd_bwd"] + fwd * parts["fwd"] + parts["base_step"] + own[name]) / vanilla
        print(f"{name:>12s}  {full:4.2f} + {fwd:.0f}f  {1000 * own[name]:6.1f}  {statistics.median(per_round):.3f} "
              f"[{lo:.3f}, {hi:.3f}]  {t[name] / t['SAM']:.3f}  {t[name] / t['GSAM']:.3f}  {predicted:.3f}")


def device_name(device) -> str:
    return torch.cuda.get_device_name() if device.type == "cuda" else f"CPU x{torch.get_num_threads()} threads"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--img-size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--amp", choices=["none", "bf16"], default="none")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3, help="steps per method per round")
    ap.add_argument("--search-every", type=int, nargs="+", default=[100, 309],
                    help="XSAM search periods to amortise over (309 = one ImageNet epoch at batch 4096)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = leave as is)")
    ap.add_argument("--k", type=int, default=5,
                    help="period of every-k, LookSAM and LookGSAM (timed over whole cycles)")
    ap.add_argument("--m", type=int, default=None,
                    help="time perturbation groups of m images against one group of the whole --batch instead")
    args = ap.parse_args()
    if args.m is not None and (args.m <= 0 or args.batch % args.m):
        ap.error(f"--m {args.m} must divide --batch {args.batch}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    import timm

    torch.manual_seed(0)
    kw = {"img_size": args.img_size} if "resnet" not in args.model else {}
    model = timm.create_model(args.model, pretrained=False, num_classes=1000, **kw).to(device)
    x = torch.randn(args.batch, 3, args.img_size, args.img_size, device=device)
    y = torch.randint(0, 1000, (args.batch,), device=device)
    if "resnet" in args.model:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    params = list(model.parameters())
    param_ids = {id(p) for p in params}
    param_bytes = sum(p.numel() * p.element_size() for p in params)

    closure = closure_on(model, x, y, args.amp)

    def base():  # lr 0: every method times the same weights
        return torch.optim.SGD(params, lr=0.0, momentum=0.9, weight_decay=1e-4)

    vanilla_opt = base()

    def vanilla_step():
        vanilla_opt.zero_grad(set_to_none=True)
        closure()
        vanilla_opt.step()

    opts = {
        "SAM": gsam.SAM(params, base(), rho=0.05, model=model),
        "GSAM": gsam.GSAM(params, base(), rho=0.05, alpha=0.4, model=model),
        # alpha* != 1 so that the slerp is computed (alpha* = 1 is plain SAM)
        "XSAM": gsam.XSAM(params, base(), rho=0.05, rho_probe=0.1, steps=1, alpha=1.5, search_every=0, model=model),
    }
    xsam_search = gsam.XSAM(params, base(), rho=0.05, rho_probe=0.1, steps=1, search_every=1, model=model)
    if args.m is not None:
        return compare_groups(args, model, x, y, {**opts, "XSAM search step": xsam_search}, device, param_bytes)
    variants = efficient_variants(params, base, model, args.k)

    def forward_only():
        with torch.no_grad():
            closure()
    steps = {"vanilla": vanilla_step, **{k: (lambda o=o: o.step(closure)) for k, o in opts.items()},
             "XSAM search step": lambda: xsam_search.step(closure), "forward": forward_only,
             **{k: (lambda o=o, c=closure_on(model, x, y, args.amp, o): o.step(c)) for k, o in variants.items()}}
    for fn in steps.values():  # warm-up; allocates the buffers
        fn()
    cycle = {k: getattr(o, "k", args.steps) for k, o in variants.items()}
    times = time_rounds(steps, args.rounds, lambda k: 1 if k == "XSAM search step" else cycle.get(k, args.steps),
                        device)
    variant_times = {k: times.pop(k) for k in [*variants, "forward"]}
    t = {k: statistics.median(v) for k, v in times.items()}
    for n in args.search_every:
        t[f"XSAM, search/{n}"] = ((n - 1) * t["XSAM"] + t["XSAM search step"]) / n

    dev = device_name(device)
    print(f"# {args.model} {args.img_size}px batch {args.batch} amp={args.amp} on {dev}, torch {torch.__version__}, "
          f"{args.rounds} rounds x {args.steps} steps, median")
    for k, v in t.items():
        print(f"{k:>18s}: {1000 * v:9.1f} ms/step")
    # The optimizer's own work, apart from the model: the same steps with a closure whose forward and
    # backward cost one element-wise pass (loss = sum <p, c>), many repetitions, median.
    cheap = cheap_closure(params)
    cheap_steps = {"two cheap passes": lambda: [vanilla_opt.zero_grad(set_to_none=True) or cheap() for _ in range(2)],
                   "vanilla": lambda: (vanilla_opt.zero_grad(set_to_none=True), cheap(), vanilla_opt.step()),
                   **{k: (lambda o=o: o.step(cheap)) for k, o in opts.items()}}
    cheap_t = {k: [] for k in cheap_steps}
    for _ in range(max(3 * args.rounds, 10)):
        for k, fn in cheap_steps.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            cheap_t[k].append(time.perf_counter() - t0)
    c = {k: statistics.median(v) for k, v in cheap_t.items()}
    one_pass = c["two cheap passes"] / 2
    base_step = c["vanilla"] - one_pass
    fwd_bwd = t["vanilla"] - base_step
    own = {k: c[k] - 2 * one_pass - base_step for k in opts}
    print(f"per step: model fwd+bwd {1000 * fwd_bwd:.0f} ms, base optimizer step {1000 * base_step:.1f} ms; the "
          f"method's own vector work (closure ~free, median of {len(cheap_t['vanilla'])}): " +
          ", ".join(f"{k} {1000 * v:.1f} ms" for k, v in own.items()))
    # predicted: two model passes + base step + own work; an XSAM search adds (search - plain XSAM) / N
    two = 2 * fwd_bwd + base_step
    predicted = {"SAM/vanilla": (two + own["SAM"]) / (fwd_bwd + base_step),
                 "GSAM/SAM": (two + own["GSAM"]) / (two + own["SAM"]),
                 "XSAM/SAM (no search)": (two + own["XSAM"]) / (two + own["SAM"]),
                 **{f"XSAM/SAM (search every {n})":
                    (two + own["XSAM"] + (t["XSAM search step"] - t["XSAM"]) / n) / (two + own["SAM"])
                    for n in args.search_every}}
    # (numerator, denominator, target) of each ratio; per round they are paired, so slow drifts cancel
    ratios = {"SAM/vanilla": ("SAM", "vanilla", 2.05), "GSAM/SAM": ("GSAM", "SAM", 1.02),
              "XSAM/SAM (no search)": ("XSAM", "SAM", 1.02),
              **{f"XSAM/SAM (search every {n})": (f"XSAM, search/{n}", "SAM", 1.02) for n in args.search_every}}
    rounds = {**times, **{f"XSAM, search/{n}": [((n - 1) * x + q) / n for x, q in
                                                zip(times["XSAM"], times["XSAM search step"])]
                          for n in args.search_every}}
    print(f"{'ratio':>28s}  target  median-ratio  paired median [95% CI]      verdict    predicted  verdict")
    for k, (num, den, target) in ratios.items():
        per_round = [a / b for a, b in zip(rounds[num], rounds[den])]
        ci = bootstrap_median(per_round)
        pred_ok = "met" if predicted[k] <= target else "missed"
        print(f"{k:>28s}  {target:6.2f}  {t[num] / t[den]:12.3f}  {statistics.median(per_round):6.3f} "
              f"[{ci[0]:.3f}, {ci[1]:.3f}]  {verdict(ci, target):>9s}  {predicted[k]:9.3f}  {pred_ok}")
    for name, opt in opts.items():
        held = held_tensors(opt, param_ids)
        extra = sum(h.numel() * h.element_size() for h in held) / param_bytes
        line = f"{name:>5s} holds {extra:4.2f} parameter-sized buffers between steps"
        if device.type == "cuda":  # peak inside the step, over vanilla's peak
            peaks = {}
            for key, fn in (("vanilla", steps["vanilla"]), (name, steps[name])):
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                fn()
                torch.cuda.synchronize()
                peaks[key] = torch.cuda.max_memory_allocated()
            line += f", {(peaks[name] - peaks['vanilla']) / param_bytes:4.2f} more at peak than vanilla"
        print(line)
    parts = {"one_pass": one_pass, "base_step": base_step, "fwd_bwd": fwd_bwd,
             "fwd": statistics.median(variant_times["forward"])}
    report_variants(variants, {**variant_times, **{k: times[k] for k in ("vanilla", "SAM", "GSAM")}}, cheap, parts,
                    device)
    for name, opt in variants.items():
        extra = sum(h.numel() * h.element_size() for h in held_tensors(opt, param_ids)) / param_bytes
        print(f"{name:>12s} holds {extra:4.2f} parameter-sized buffers between steps")


if __name__ == "__main__":
    main()
