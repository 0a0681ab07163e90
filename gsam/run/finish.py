"""What a measured model leaves behind, for train.py's final evaluation and evaluate.py alike: ``results.json``
(Table 1's columns at the top level, every set's metrics under ``results``) and the wandb summary's keys."""
from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

from gsam.evaluation.table1 import table1_row
from gsam.evaluation.tables import table1_method


def scalars(metrics: dict) -> dict:
    """The numbers of a set's metrics, without nested details (ImageNet-C's per-corruption tables)."""
    return {k: v for k, v in metrics.items() if not isinstance(v, dict)}


def per_set(results: dict, sep: str) -> dict:
    """Every set's numbers under ``<set><sep><metric>`` (summary.csv: ``_``, the wandb summary: ``/``)."""
    return {f"{name}{sep}{k}": v for name, m in results.items() for k, v in scalars(m).items()}


def table1_summary(results: dict) -> dict:
    """Table 1's columns under ``table1/`` (the wandb summary)."""
    return {f"table1/{k}": v for k, v in table1_row(results).items()}


def write_results(path: Path, results: dict, cfg: DictConfig, **extra) -> dict:
    """``results.json`` (or a checkpoint's ``results-*.json``), replaced in one rename; returns what it holds."""
    method = table1_method(str(cfg.sam.name))
    final = {**table1_row(results), "name": cfg.name, "model": cfg.model.short, "method": method, **extra,
             "results": results}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(final, indent=2))
    tmp.replace(path)
    return final
