"""Run logging on rank 0: ``metrics.jsonl`` (every logged step and every evaluation), ``summary.csv``
(one row per evaluation) and wandb (offline unless ``logger.wandb.mode=online``)."""
from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path


def _clean(d: Mapping) -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, float) and not math.isfinite(v):
            v = str(v)
        out[k] = v
    return out


class RunLogger:
    def __init__(self, output_dir: str | Path, *, enabled: bool, wandb_cfg: Mapping | None, config: dict,
                 run_id: str | None = None, name: str | None = None):
        self.dir = Path(output_dir)
        self.enabled = enabled
        self.wandb = None
        self.run_id = run_id
        if not enabled:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(self.dir / "metrics.jsonl", "a", buffering=1)
        if wandb_cfg and wandb_cfg.get("mode", "offline") != "disabled":
            import wandb

            os.environ.setdefault("WANDB_SILENT", "true")
            self.wandb = wandb.init(
                project=wandb_cfg.get("project"), entity=wandb_cfg.get("entity"), group=wandb_cfg.get("group"),
                tags=list(wandb_cfg.get("tags") or []), mode=wandb_cfg.get("mode", "offline"), name=name,
                id=run_id, resume="allow", dir=str(self.dir), config=config)
            self.run_id = self.wandb.id

    def log(self, step: int, metrics: Mapping, kind: str = "train") -> None:
        if not self.enabled:
            return
        self._jsonl.write(json.dumps({"kind": kind, "step": step, **_clean(metrics)}) + "\n")
        self._wandb_call(lambda run: run.log({f"{kind}/{k}": v for k, v in metrics.items()}, step=step))

    def _wandb_call(self, fn) -> None:
        """wandb never ends a run: its service is a separate process, and a SIGTERM to the Slurm job step
        (preemption, gsam/preemption.py) ends it before the trainer reaches its checkpoint. metrics.jsonl
        goes on; the resumed run logs to the same wandb run id again."""
        if self.wandb is None:
            return
        try:
            fn(self.wandb)
        except Exception as e:
            print(f"[gsam] wandb stopped ({type(e).__name__}: {e}); logging to metrics.jsonl only", flush=True)
            self.wandb = None

    def summary_row(self, row: Mapping) -> None:
        if not self.enabled:
            return
        path = self.dir / "summary.csv"
        rows = list(csv.DictReader(open(path))) if path.exists() else []
        rows.append({k: str(v) for k, v in row.items()})
        fields = list(dict.fromkeys(k for r in rows for k in r))
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)
        os.replace(tmp, path)

    def set_summary(self, metrics: Mapping) -> None:
        self._wandb_call(lambda run: run.summary.update(dict(metrics)))

    def close(self) -> None:
        if self.enabled:
            self._jsonl.close()
            self._wandb_call(lambda run: run.finish())
