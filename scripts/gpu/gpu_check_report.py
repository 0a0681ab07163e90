"""The GPU kit's figures and its summary: what a run's ``metrics.jsonl`` says, ``summary.json`` and ``summary.md``."""
from __future__ import annotations

import json
import math
import platform
import statistics
import time
from pathlib import Path


def train_records(run_dir: Path) -> list[dict]:
    from gsam.runlog import read_metrics

    return read_metrics(run_dir).get("train", [])


def _median(xs: list) -> float | None:
    return round(statistics.median(xs), 4) if xs else None


def train_figures(run_dir: Path, results: dict) -> dict:
    """Steps, losses, throughput (median over the steps after the first 5: compilation and cuDNN autotuning
    stay out), data-wait share, peak memory, XSAM searches, skipped steps and the final top-1."""
    recs = train_records(run_dir)
    steady = recs[5:] or recs
    losses = [r["loss"] for r in recs]
    cfg = (run_dir / "config.yaml").read_text()
    return {"steps": recs[-1]["step"] if recs else 0,
            "loss_first": round(losses[0], 4) if losses else None,
            "loss_last": round(losses[-1], 4) if losses else None,
            "losses_finite": all(math.isfinite(x) for x in losses),
            "first_step_img_s": round(recs[0]["images_per_s"], 1) if recs else None,
            "img_s": _median([r["images_per_s"] for r in steady]),
            "data_wait": _median([r["data_wait"] for r in steady]),
            "peak_mem_gb": max((r.get("peak_mem_gb", 0.0) for r in recs), default=None),
            "searches": sum(1 for r in recs if r.get("searched")),
            "skipped_steps": sum(1 for r in recs if r.get("skipped")),
            "channels_last": "channels_last: true" in cfg or ("family: resnet" in cfg and "channels_last: auto" in cfg),
            "val_top1": results.get("val", {}).get("top1"),
            "minival_top1": results.get("minival", {}).get("top1")}


def kill_resume_figures(run_dir: Path, killed: list[dict], steps: int, output: str, device: str) -> dict:
    """The resumed run must start at a checkpoint before the kill and end at ``steps``. ``killed``: the train
    records the killed run had logged; the steps both runs logged (replayed after the checkpoint; the resume cuts
    them from metrics.jsonl) give the loss difference, which FFCV's crops could make non-zero."""
    from gsam.state.checkpoint import load

    before = {r["step"]: r["loss"] for r in killed}
    after = {r["step"]: r["loss"] for r in train_records(run_dir)}
    replayed = {s: (before[s], after[s]) for s in before.keys() & after.keys()}
    killed_at = max(before, default=0)
    resumed_at = None
    for line in output.splitlines():
        if "resumed at step" in line:
            resumed_at = int(line.rsplit("resumed at step", 1)[1].split()[0].strip(",."))
    state = load(run_dir / "checkpoints" / "last.pt")
    figs = {"killed_at_step": killed_at, "resumed_at_step": resumed_at, "final_step": state["loop"]["step"],
            "replayed_steps": len(replayed),
            "replayed_max_abs_loss_diff": round(max((abs(a - b) for a, b in replayed.values()), default=0.0), 6),
            "cuda_rng_in_checkpoint": "cuda" in state["rng"][0]}
    if resumed_at is None or resumed_at >= killed_at or figs["final_step"] != steps:
        raise RuntimeError(f"resume did not continue from a checkpoint before the kill: {figs}")
    if device == "cuda" and not figs["cuda_rng_in_checkpoint"]:
        raise RuntimeError("the checkpoint holds no CUDA RNG state")
    return figs


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k} {_fmt(x)}" for k, x in v.items())
    return str(v)


def write_summary(out: Path, results: list[dict], wall_s: float, mode: str) -> bool:
    """Writes summary.json and summary.md; returns whether every part passed."""
    env = next((r["figures"] for r in results if r["part"] == "env" and r["ok"]), {})
    ok = all(r["ok"] for r in results)
    summary = {"ok": ok, "mode": mode, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "wall_s": round(wall_s, 1),
               "gpu": env.get("gpu"), "torch": env.get("torch"), "cuda": env.get("cuda"),
               "python": env.get("python") or platform.python_version(), "parts": results}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    lines = [f"# gsam GPU check: {'PASSED' if ok else 'FAILED'} ({mode}, {summary['wall_s']} s)", "",
             f"{summary['date']}; GPU {summary['gpu']}; torch {summary['torch']}, CUDA {summary['cuda']}, "
             f"Python {summary['python']}", "", "| part | result | s | figures |", "|---|---|---|---|"]
    for r in results:
        figs = "; ".join(f"{k}: {_fmt(v)}" for k, v in r["figures"].items())
        lines.append(f"| {r['part']} | {'ok' if r['ok'] else '**FAILED**'} | {r['seconds']} | {figs} |")
    for r in results:
        if not r["ok"]:
            lines += ["", f"## {r['part']}: failure", "```", r["error"] or "", "```"]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    return ok
