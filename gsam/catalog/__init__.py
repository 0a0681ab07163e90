"""What this checkout can train, as timm's ``list_models`` lists its models: the methods (``sam=<name>``) with one
line each and their keys, the models (``model=<name>``) and the experiments (``+experiment=<name>``), the rows of
the GSAM paper's Table 1 marked. ``python -m gsam.catalog`` (or ``gsam-list``) prints them; the functions return
them for code. Methods come from the registry; models and experiments from the files of ``configs/``, so a new
file is listed without being declared twice."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

import gsam.optim  # noqa: F401  (registers the shipped methods)
from gsam.config.keys import CONFIGS
from gsam.evaluation.tables import TABLE1_MODELS, table1_experiments, table6_experiments, variant_experiments
from gsam.optim.registry import METHODS


@dataclasses.dataclass(frozen=True)
class Entry:
    """One listed item: its name on the command line, a one-line description, its keys (methods), and its role:
    ``table1`` (a row, or a model, of the paper's Table 1), ``table6``, ``variant`` (an efficient method beside
    Table 1) or ``other`` (demo, study)."""

    name: str
    summary: str
    detail: tuple[str, ...] = ()
    role: str = "other"


def list_methods() -> list[Entry]:
    """The registered methods (``sam=<name>``) in registration order, each with its summary and its keys."""
    return [Entry(m.name, m.summary, tuple(f"sam.{k}" for k in m.keys)) for m in METHODS.values()]


SUMMARY_CHARS = 110  # a listing keeps one line per item


def _first_comment(path: Path) -> str:
    """The first sentence of a config file's opening comment (Hydra's package directive left out): what the file
    says it is, clipped to ``SUMMARY_CHARS``."""
    words = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        if "@package" not in line:
            words.append(line.lstrip("# ").strip())
    sentence = " ".join(words).split(". ")[0].rstrip(".")
    return sentence if len(sentence) <= SUMMARY_CHARS else sentence[:SUMMARY_CHARS - 3].rstrip() + "..."


def list_models(configs: Path = CONFIGS) -> list[Entry]:
    """The models of ``configs/model`` (``model=<name>``): each one's timm name, family and loss, Table 1's
    marked."""
    out = []
    for path in sorted((Path(configs) / "model").glob("*.yaml")):
        spec = yaml.safe_load(path.read_text())
        role = "table1" if path.stem in TABLE1_MODELS else "other"
        out.append(Entry(path.stem, f"timm {spec['name']} ({spec['family']}, {spec['loss']} loss)", role=role))
    return out


def experiment_role(name: str) -> str:
    if name in table1_experiments():
        return "table1"
    if name in table6_experiments():
        return "table6"
    return "variant" if name in variant_experiments() else "other"


def list_experiments(configs: Path = CONFIGS, role: str | None = None) -> list[Entry]:
    """The experiments of ``configs/experiment`` (``+experiment=<name>``), only those of ``role`` if given."""
    out = [Entry(p.stem, _first_comment(p), role=experiment_role(p.stem))
           for p in sorted((Path(configs) / "experiment").glob("*.yaml"))]
    return [e for e in out if role is None or e.role == role]
