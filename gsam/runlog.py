"""Run logging on rank 0: ``metrics.jsonl`` (every logged step and every evaluation), ``summary.csv``
(one row per evaluation) and wandb (offline unless ``logger.wandb.mode=online``).

Every checkpoint records how many records both files had (``position``); a resumed run first cuts the files
back to that point, so the steps and evaluations it replays appear once, and a rerun of a finished run does
not add a second final row. ``read_records`` is the one reader of metrics.jsonl (``read_metrics``: by kind and
step); ``json_safe`` is the one cleaner of what is written as JSON."""
from __future__ import annotations

import csv
import json
import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path


def json_safe(value):
    """``value`` with every non-finite float as its string ("nan", "inf", "-inf"), in mappings and lists at any
    depth: JSON has no literal for them (``json.dumps`` would write NaN, which strict readers refuse)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def read_records(run_dir: str | Path) -> list[dict]:
    """Every record of a run's metrics.jsonl, in logged order (FileNotFoundError naming the file)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: is {run_dir} a trainer run folder?")
    text = path.read_text()
    lines = text.splitlines()
    if lines and not text.endswith("\n"):
        lines.pop()  # cut short by a kill -9 or a full disk mid-write: not a record
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a cut line that a writer before this one appended to: skipped, said
            warnings.warn(f"{path}: line {i + 1} is not JSON (a record cut short, then appended to); skipped",
                          stacklevel=2)
    return records


def drop_partial_line(path: Path) -> None:
    """Cut ``path`` back to its last complete line: a record cut short (kill -9, full disk) must not be joined to
    the next one appended."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data[: data.rfind(b"\n") + 1])
        os.replace(tmp, path)


def read_metrics(run_dir: str | Path) -> dict[str, list[dict]]:
    """A run's records grouped by kind (train, val, minival, analysis, ...), one per step in step order. A resumed
    run may have logged a step twice (after its last checkpoint): the later record wins."""
    by_kind: dict[str, dict[int, dict]] = {}
    for rec in read_records(run_dir):
        by_kind.setdefault(rec["kind"], {})[rec["step"]] = rec
    return {k: [v[s] for s in sorted(v)] for k, v in by_kind.items()}


def _summary_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _write_summary(path: Path, rows: list[dict]) -> None:
    fields = list(dict.fromkeys(k for r in rows for k in r))
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def truncate_logs(output_dir: str | Path, position: Mapping) -> None:
    """Cut metrics.jsonl and summary.csv back to ``position`` (a checkpoint's): what was logged after the
    checkpoint is replayed by the resumed run."""
    out = Path(output_dir)
    metrics = out / "metrics.jsonl"
    if metrics.exists():
        kept = metrics.read_text().splitlines(keepends=True)[: int(position["metrics"])]
        tmp = metrics.with_suffix(".tmp")
        tmp.write_text("".join(kept))
        os.replace(tmp, metrics)
    summary = out / "summary.csv"
    rows = _summary_rows(summary)
    if len(rows) > int(position["summary"]) == 0:
        summary.unlink()
    elif len(rows) > int(position["summary"]):
        _write_summary(summary, rows[: int(position["summary"])])


class LogWriteError(RuntimeError):
    """metrics.jsonl or summary.csv could not be written (a full disk, a quota); one line naming the file."""


def _write_failed(path: Path, e: OSError) -> LogWriteError:
    reason = e.strerror or str(e) or type(e).__name__
    return LogWriteError(f"cannot write {path} ({reason}); free space there and rerun the same command to resume "
                         "(the logs are cut back to the last checkpoint)")


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
        drop_partial_line(self.dir / "metrics.jsonl")
        self._jsonl = open(self.dir / "metrics.jsonl", "a", buffering=1)
        self._records = len((self.dir / "metrics.jsonl").read_text().splitlines())
        self._rows = len(_summary_rows(self.dir / "summary.csv"))
        if wandb_cfg and wandb_cfg.get("mode", "offline") != "disabled":
            import wandb

            os.environ.setdefault("WANDB_SILENT", "true")
            try:
                self.wandb = wandb.init(
                    project=wandb_cfg.get("project"), entity=wandb_cfg.get("entity"), group=wandb_cfg.get("group"),
                    tags=list(wandb_cfg.get("tags") or []), mode=wandb_cfg.get("mode", "offline"), name=name,
                    id=run_id, resume="allow", dir=str(self.dir), config=config)
            except Exception as e:  # no API key for online, an unwritable folder: before any step, one line
                from gsam.config.checks import ConfigError

                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                self._abandon()
                raise ConfigError(f"logger.wandb.mode={wandb_cfg.get('mode', 'offline')}: wandb could not start "
                                  f"({type(e).__name__}: {first}); run `wandb login` for online, or set "
                                  "logger.wandb.mode=offline or disabled") from None
            self.run_id = self.wandb.id

    def log(self, step: int, metrics: Mapping, kind: str = "train") -> None:
        if not self.enabled:
            return
        try:
            self._jsonl.write(json.dumps({"kind": kind, "step": step, **json_safe(metrics)}) + "\n")
        except OSError as e:
            self._abandon()
            raise _write_failed(self.dir / "metrics.jsonl", e) from e
        self._records += 1
        self._wandb_call(lambda run: run.log({f"{kind}/{k}": v for k, v in metrics.items()}, step=step))

    def _abandon(self) -> None:
        """Close metrics.jsonl after a failed write: what is left in its buffer would fail again at exit."""
        try:
            self._jsonl.close()
        except OSError:
            pass
        self.enabled = False

    def _wandb_call(self, fn) -> None:
        """wandb never ends a run: its service is a separate process, and a SIGTERM to the Slurm job step
        (preemption, gsam/state/preemption.py) ends it before the trainer reaches its checkpoint. metrics.jsonl
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
        try:
            _write_summary(path, [*_summary_rows(path), {k: str(v) for k, v in row.items()}])
        except OSError as e:
            raise _write_failed(path, e) from e
        self._rows += 1

    @property
    def position(self) -> dict:
        """How many records each file holds now; a checkpoint keeps it (``truncate_logs`` on resume)."""
        return {"metrics": self._records, "summary": self._rows} if self.enabled else {}

    def set_summary(self, metrics: Mapping) -> None:
        self._wandb_call(lambda run: run.summary.update(dict(metrics)))

    def close(self) -> None:
        if self.enabled:
            self._jsonl.close()
            self._wandb_call(lambda run: run.finish())
