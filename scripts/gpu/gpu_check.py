"""The GPU acceptance kit's driver: every part of ``scripts/gpu/gpu_check_parts.py`` in as few processes as it can.

    bash scripts/gpu_check.sh OUT                      # on the GPU machine (installs .gpu_bundle first)
    bash scripts/gpu_check.sh OUT --device cpu --tiny  # the CPU rehearsal (tests/test_gpu_kit.py)
    bash scripts/gpu_check.sh OUT --only bench_vit_b32,bench_resnet50   # rerun some parts

One worker process runs the parts in order and appends each result to ``<work>/parts.jsonl``. A part that
kills its process (a segfault, a CUDA error that poisons the context) or outlives its time limit is recorded
as failed with the tail of the log, and a fresh worker goes on with the parts after it, so one failure never
costs the rest of a scarce GPU session. At the end ``OUT/summary.json`` and ``OUT/summary.md`` hold the
machine, the versions, every figure and every failure; the exit status is 1 if any part failed.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gpu_check_parts import PARTS, run_part  # noqa: E402
from gpu_check_report import write_summary  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="folder for summary.json, summary.md and gpu_check.log")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--tiny", action="store_true", help="tiny images, models, batches and step counts (rehearsal)")
    ap.add_argument("--only", default="", help=f"comma list of parts (default all: {','.join(PARTS)})")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default <out>/../gsam-gpu-work)")
    ap.add_argument("--deadline", type=float, default=0, help="seconds after which no further part starts (0: none)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.parts = [p for p in args.only.split(",") if p] or list(PARTS)
    unknown = [p for p in args.parts if p not in PARTS]
    if unknown:
        ap.error(f"--only: unknown part(s) {unknown}; choose from {', '.join(PARTS)}")
    args.work = (args.work or args.out.resolve().parent / f"{args.out.name}-work").resolve()
    return args


def worker(args: argparse.Namespace) -> None:
    """Run ``args.parts`` in order in this process, one line of ``parts.jsonl`` each."""
    for name in args.parts:
        if (args.work / "stop").exists():
            return
        (args.work / "current").write_text(json.dumps({"part": name, "start": time.time()}))
        result = run_part(name, args)
        with open(args.work / "parts.jsonl", "a") as f:
            f.write(json.dumps(result) + "\n")
        print(f"[gpu_check] {name}: {'ok' if result['ok'] else 'FAILED'} in {result['seconds']:.1f} s", flush=True)


def _done(work: Path) -> dict:
    path = work / "parts.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return {r["part"]: r for r in map(json.loads, lines)}


def _log_tail(log: Path, lines: int = 30) -> str:
    text = log.read_text(errors="replace").splitlines() if log.exists() else []
    return "\n".join(text[-lines:])


def _start_worker(args, parts: list[str], log: Path) -> subprocess.Popen:
    cmd = [sys.executable, str(Path(__file__).resolve()), str(args.out), "--device", args.device,
           "--work", str(args.work), "--only", ",".join(parts), "--worker"] + (["--tiny"] if args.tiny else [])
    with open(log, "a") as f:
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def supervise(args: argparse.Namespace, t0: float) -> dict:
    """Run the parts in workers until each has a result; returns {part: result}. After ``--deadline`` seconds
    the worker finishes its part and the parts not started are recorded as not run."""
    log = args.out / "gpu_check.log"
    remaining = list(args.parts)
    while remaining:
        (args.work / "current").unlink(missing_ok=True)
        proc = _start_worker(args, remaining, log)
        reason, reported = None, len(_done(args.work))
        while proc.poll() is None:
            time.sleep(0.5)
            if len(_done(args.work)) > reported:  # the summary so far, in case the whole call is cut short
                reported = len(_done(args.work))
                write_summary(args.out, list(_done(args.work).values()), wall_s=time.time() - t0, mode=_mode(args))
            cur = args.work / "current"
            if cur.exists():
                c = json.loads(cur.read_text())
                limit = PARTS[c["part"]].limit_s
                if c["part"] not in _done(args.work) and time.time() - c["start"] > limit:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    reason = f"timed out after {limit} s (killed)"
                elif args.deadline and time.time() - t0 > args.deadline and not (args.work / "stop").exists():
                    (args.work / "stop").touch()  # the worker stops after its current part
        done = _done(args.work)
        lost = [p for p in remaining if p not in done]
        stopped = proc.returncode == 0 and (args.work / "stop").exists()
        if lost and not stopped:  # the worker died inside lost[0], or was killed there
            failed = {"part": lost[0], "ok": False, "seconds": None, "figures": {},
                      "error": (reason or f"the worker process died (exit status {proc.returncode})") + "\n"
                      + _log_tail(log)}
            with open(args.work / "parts.jsonl", "a") as f:
                f.write(json.dumps(failed) + "\n")
        remaining = [p for p in remaining if p not in _done(args.work)]
        if (args.work / "stop").exists():
            with open(args.work / "parts.jsonl", "a") as f:
                for p in remaining:
                    f.write(json.dumps({"part": p, "ok": False, "seconds": None, "figures": {},
                                        "error": f"not run: --deadline {args.deadline} s passed"}) + "\n")
            remaining = []
        write_summary(args.out, [r for p, r in _done(args.work).items()], wall_s=time.time() - t0, mode=_mode(args))
    return _done(args.work)


def _mode(args) -> str:
    return f"{args.device}{' tiny' if args.tiny else ''}"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    for f in ("parts.jsonl", "stop"):
        (args.work / f).unlink(missing_ok=True)
    t0 = time.time()
    results = supervise(args, t0)
    ok = write_summary(args.out, [results[p] for p in args.parts], wall_s=time.time() - t0, mode=_mode(args))
    print((args.out / "summary.md").read_text())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
