"""The evaluation sets of a run: ImageNet val/minival (with ReaL) from the data loaders, and one evaluator per
entry of ``eval.sets`` (``{name: {kind, path, ...}}``), built by its kind's builder (``BUILDERS``); measured on a
model by ``measure_sets``, each set's metrics from ``gsam/evaluation/metrics.py``.

An entry whose path is null is skipped with a one-line notice; a configured path that does not exist, an unknown
kind or a key its kind does not read is an error naming the key (a typo should not silently drop a column of
Table 1).
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import torch
from omegaconf import DictConfig

from gsam.data.folder import eval_loader, eval_transform
from gsam.data.sources import corruption_folders, folder_samples, real_index, subset_samples, v2_samples

from gsam.config.checks import ConfigError, is_int
from gsam.progress import EvalProgress, Style
from gsam.evaluation.metrics import (BENCHMARK_CORRUPTIONS, EXTRA_CORRUPTIONS, ClassificationEvaluator, CorruptionEvaluator,
                         SubsetEvaluator)


def _timm_info(name: str) -> Path:
    """A file of timm's ``data/_info`` (the ImageNet label files shipped inside its wheel; no download)."""
    return Path(find_spec("timm").submodule_search_locations[0]) / "data" / "_info" / name


def timm_real_labels() -> Path:
    path = _timm_info("imagenet_real_labels.json")
    if not path.is_file():
        raise ConfigError(f"eval.real_labels=timm: this timm has no {path}; give the path of real.json")
    return path


def check_imagenet_r_classes(class_indices: list[int], classes: list[str], key: str = "ImageNet-R") -> None:
    """For an ImageNet-1k model, the R folders must be ImageNet-R's 200 classes (timm's copy of the list):
    a partial copy would silently change the class subset the logits are restricted to."""
    synsets = _timm_info("imagenet_synsets.txt").read_text().split()
    if classes != synsets:
        return  # not the ImageNet-1k label space (the demo, a subset): the folders define the subset
    expected = set(_timm_info("imagenet_r_synsets.txt").read_text().split())
    found = {classes[i] for i in class_indices}
    if found != expected:
        missing, extra = sorted(expected - found), sorted(found - expected)
        raise ConfigError(f"{key}: the folders are not ImageNet-R's {len(expected)} classes ({len(missing)} missing, "
                          f"e.g. {missing[:3]}; {len(extra)} not in ImageNet-R, e.g. {extra[:3]})")


# The published sizes of ImageNet val and of its ReaL-labelled images (each set kind's is in BUILDERS). Checked when
# the label space is ImageNet-1k's, i.e. when the set is the real one.
VAL_IMAGES = {"images": 50_000, "real_images": 46_837}


def imagenet_1k(classes: list[str]) -> bool:
    """Whether ``classes`` are ImageNet-1k's 1000 wnids in the standard order (timm's list)."""
    return len(classes) == 1000 and classes == _timm_info("imagenet_synsets.txt").read_text().split()


def check_set_size(what: str, found: int | None, known: int, cfg: DictConfig) -> None:
    """A set of ImageNet-1k's label space whose file count differs from its published size is refused before
    anything runs (a partial copy would give a Table 1 number on a different set); eval.allow_partial=true
    scores it anyway, and its results record the count."""
    if found is not None and found != known and not cfg.eval.get("allow_partial", False):
        raise ConfigError(f"eval: {what} holds {found:,} images, the published set {known:,}: a partial copy? Complete "
                          "it, or set eval.allow_partial=true to score it as it is")


def read_real_labels(path: Path, num_classes: int | None = None) -> list:
    """ReaL's ``real.json``: one list of class indices per val image (entry n-1 for ``ILSVRC2012_val_<n>``; an
    empty list where the raters kept no label). Anything else is a ConfigError naming the file, where it used to
    fail with a KeyError, TypeError or RecursionError, or be scored as given (a label of 1.5, -1 or 5000 counted
    as never matching, and top-1 came out 0.00, 33.33 or nan)."""
    where = f"eval.real_labels={path}"
    try:
        real = json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError) as e:  # json.JSONDecodeError is a ValueError
        raise ConfigError(f"{where}: not JSON ({e})") from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deep; expected a list of lists of class indices") from None
    if not isinstance(real, list):
        raise ConfigError(f"{where}: expected a list holding one list of class indices per val image, got "
                          f"{type(real).__name__}")
    odd = next((n for n, r in enumerate(real) if not isinstance(r, list)), None)
    if odd is not None:
        raise ConfigError(f"{where}: entry {odd} (ILSVRC2012_val_{odd + 1:08d}) is {type(real[odd]).__name__}, not a "
                          "list of class indices")
    for n, labels in enumerate(real):
        bad = [v for v in labels if not (is_int(v) and 0 <= v < (num_classes or v + 1))]
        if bad:
            span = f"in 0..{num_classes - 1}" if num_classes else ">= 0"
            raise ConfigError(f"{where}: entry {n} (ILSVRC2012_val_{n + 1:08d}) holds {bad[0]!r}, not a class index "
                              f"{span}")
    return real


def real_targets(labels_path: Path, files: list[str], num_classes: int | None = None) -> torch.Tensor | None:
    """(records, max labels) int tensor, -1 padded: the ReaL labels of each val record, found by its file
    name (``ILSVRC2012_val_00000001`` is entry 0). None when the files are not named that way; a ConfigError
    when real.json has no entry for one of them."""
    indices = [real_index(f) for f in files]
    if any(i is None for i in indices):
        return None
    real = read_real_labels(labels_path, num_classes)
    if indices and max(indices) >= len(real):
        f = files[indices.index(max(indices))]
        raise ConfigError(f"eval.real_labels={labels_path}: {len(real):,} entries, but val holds {f} (entry "
                          f"{max(indices):,}): the labels of another set?")
    rows = [real[i] for i in indices]
    width = max((len(r) for r in rows), default=1) or 1
    out = torch.full((len(rows), width), -1, dtype=torch.long)
    for k, r in enumerate(rows):
        out[k, :len(r)] = torch.as_tensor(r, dtype=torch.long)
    return out


def _path(key: str, value) -> Path | None:
    """The path ``value`` of config key ``key``; None when unset."""
    if value in (None, ""):
        return None
    path = Path(str(value))
    if not path.exists():
        raise ConfigError(f"{key}={value!r}: no such file or directory")
    return path


@dataclass(frozen=True)
class _Context:
    """What every set's builder needs: the label space, the transforms and the loader settings."""
    cfg: DictConfig
    classes: list[str]
    full: bool  # the label space is ImageNet-1k's: the folders are checked against the published sets
    resize_crop: Callable  # resize the short side, centre-crop
    crop_only: Callable    # centre-crop only: ImageNet-C's images are already 224x224 centre crops
    make: dict
    notice: Callable

    def check_size(self, what: str, found: int, known: int) -> None:
        if self.full:
            check_set_size(what, found, known, self.cfg)


def _imagenet_v2(name: str, key: str, path: Path, entry: Mapping, ctx: _Context, known: int):
    """ImageNet-V2 (Recht et al. 2019): class-index folders 0..999."""
    samples = v2_samples(path, len(ctx.classes), key)
    ctx.check_size(f"{key}={path}", len(samples), known)
    return ClassificationEvaluator(name, eval_loader(samples, ctx.resize_crop, **ctx.make))


def _imagenet_r(name: str, key: str, path: Path, entry: Mapping, ctx: _Context, known: int):
    """ImageNet-R (Hendrycks et al. 2021): 200 wnid folders, scored over all classes and over its own."""
    samples, cols = subset_samples(path, ctx.classes, key)
    check_imagenet_r_classes(cols, ctx.classes, key)
    ctx.check_size(f"{key}={path}", len(samples), known)
    return SubsetEvaluator(name, eval_loader(samples, ctx.resize_crop, **ctx.make), cols)


def _imagenet_c(name: str, key: str, path: Path, entry: Mapping, ctx: _Context, known: int):
    """ImageNet-C (Hendrycks & Dietterich 2019): <corruption>/<severity>/<wnid>/, ``corruptions`` of them
    (null: every one found)."""
    found = corruption_folders(path, key)
    wanted = list(entry.get("corruptions") or found)
    unknown = [w for w in wanted if w not in found]
    if unknown:
        raise ConfigError(f"eval.sets.{name}.corruptions: {unknown} not found under {path} (found {sorted(found)})")
    odd = [w for w in wanted if w not in BENCHMARK_CORRUPTIONS + EXTRA_CORRUPTIONS]
    if odd:
        ctx.notice(f"[gsam] eval: {name}: {odd} are not ImageNet-C corruptions; they count only in mean_found")
    loaders = {}
    for w in wanted:
        for sev, folder in found[w].items():
            samples = folder_samples(folder, ctx.classes, f"{key} {w}/{sev}")
            ctx.check_size(f"{key} {folder}", len(samples), known)
            loaders.setdefault(w, {})[sev] = eval_loader(samples, ctx.crop_only, **ctx.make)
    return CorruptionEvaluator(name, loaders)


@dataclass(frozen=True)
class SetKind:
    """A kind of evaluation set: its builder, the published set's image count (per corruption and severity for
    ImageNet-C) and the entry keys it reads beyond ``kind`` and ``path``."""
    build: Callable
    images: int
    keys: tuple[str, ...] = ()


BUILDERS = {
    "imagenet_v2": SetKind(_imagenet_v2, 10_000),  # matched-frequency
    "imagenet_r": SetKind(_imagenet_r, 30_000),
    "imagenet_c": SetKind(_imagenet_c, 50_000, ("corruptions",)),
}


def set_entries(cfg: DictConfig) -> dict[str, tuple[SetKind, Mapping]]:
    """{name: (kind, entry)} of ``eval.sets``, each entry checked: a mapping with a known kind and only the keys
    its kind reads (ConfigError naming the key otherwise)."""
    out = {}
    for name, entry in (cfg.eval.get("sets") or {}).items():
        if not isinstance(entry, Mapping) or "kind" not in entry:
            raise ConfigError(f"eval.sets.{name}: expected a mapping with kind and path, got {entry!r}")
        kind = BUILDERS.get(entry["kind"])
        if kind is None:
            raise ConfigError(f"eval.sets.{name}.kind={entry['kind']!r}: unknown kind; expected one of "
                              f"{', '.join(BUILDERS)}")
        extra = sorted(set(entry) - {"kind", "path", *kind.keys})
        if extra:
            raise ConfigError(f"eval.sets.{name}.{extra[0]}: not a key of kind {entry['kind']} (its keys: kind, path"
                              f"{''.join(', ' + k for k in kind.keys)})")
        out[str(name)] = (kind, entry)
    return out


def _split_evaluators(cfg: DictConfig, loaders: dict, files: dict, loss_fn, full: bool, notice,
                      num_classes: int) -> dict:
    """{name: evaluator} of the data loaders' splits (minival, val); val with ReaL where its labels apply."""
    d = cfg.data
    if full and "val" in loaders:
        check_set_size(f"val ({d.get('root') or d.get('betons')})", len(files["val"]) if files.get("val") else None,
                       VAL_IMAGES["images"], cfg)
    evaluators = {}
    for name, loader in loaders.items():
        targets = None
        if name == "val" and cfg.eval.get("real_labels"):
            labels = (timm_real_labels() if cfg.eval.real_labels == "timm"
                      else _path("eval.real_labels", cfg.eval.real_labels))
            targets = real_targets(labels, files["val"], num_classes) if files.get("val") else None
            if targets is None:
                notice("[gsam] eval: real skipped (the val files are not named ILSVRC2012_val_<n>, so they have no "
                       "ReaL labels)")
        evaluators[name] = ClassificationEvaluator(name, loader, loss_fn=loss_fn, real_targets=targets)
        if full and name == "val":
            evaluators[name].expected = dict(VAL_IMAGES)
    return evaluators


def build_eval_sets(cfg: DictConfig, *, classes: list[str], loaders: dict, files: dict, loss_fn, mean, std,
                    rank: int, world: int, notice=print) -> dict:
    """{name: evaluator}: ``minival``/``val`` from the data loaders, then each ``eval.sets`` entry with a path."""
    d = cfg.data
    full = imagenet_1k(classes)
    entries = set_entries(cfg)
    evaluators = _split_evaluators(cfg, loaders, files, loss_fn, full, notice, len(classes))
    make = dict(batch=int(d.eval_batch_size), num_workers=int(d.num_workers), rank=rank, world=world)
    size = int(d.img_size)
    ctx = _Context(cfg, classes, full, eval_transform(size, mean, std, float(d.crop_pct)),
                   eval_transform(size, mean, std, crop_pct=1.0, resize=False), make, notice)
    skipped = []
    for name, (kind, entry) in entries.items():
        key = f"eval.sets.{name}.path"
        path = _path(key, entry.get("path"))
        if path is None:
            skipped.append(name)
            continue
        evaluators[name] = kind.build(name, key, path, entry, ctx, kind.images)
        evaluators[name].expected = {"images": kind.images} if full else {}
    for name in skipped:
        notice(f"[gsam] eval: {name} skipped (eval.sets.{name}.path not set)")
    return evaluators


def measure_sets(sets: dict, model, device: torch.device, amp_dtype, channels_last: bool,
                 progress: Style | bool | None, should_stop=None) -> dict:
    """{set: metrics} of ``model`` on each of ``sets`` ({name: evaluator}). ``progress`` (rank 0 with
    train.progress, as the training's; gsam/progress.py): on a terminal a bar per set counting its batches, which
    stays when it is the only bar (evaluate.py) and goes when it sits under the training bar (tqdm's leave=None);
    in a log a line per set with its result; True: bars, False: nothing, for a caller that chose. ``should_stop``
    (every rank asks it, before each set): a preemption signal ends the pass there, with the sets measured so
    far."""
    if isinstance(progress, bool):
        progress = Style(bars=True) if progress else None
    results = {}
    for name, evaluator in sets.items():
        if should_stop is not None and results and should_stop():
            break
        shown = None if progress is None else EvalProgress(progress, name, evaluator.batches)
        try:
            results[name] = evaluator(model, device, amp_dtype, channels_last,
                                      on_batch=None if shown is None else shown.update)
        finally:
            if shown is not None:
                shown.close(results.get(name))
        check_measured_count(name, results[name], getattr(evaluator, "expected", {}))
    return results


def _counts(images) -> list[tuple[str, int]]:
    """(where, count) of a set's ``images``: one number, ImageNet-C's {corruption: {severity: n}}, or nothing when
    the set has no such count (``real_images`` of a val scored without ReaL labels)."""
    if images is None:
        return []
    if isinstance(images, dict):
        return [(f"{c}/{s}", n) for c, sev in images.items() for s, n in sev.items() if n is not None]
    return [("", images)]


def check_measured_count(name: str, metrics: dict, expected: dict) -> None:
    """Every set's metrics hold its image count. Where the set is a published one (``expected``), a count that
    differs (unreadable images skipped, a partial set allowed) is recorded as ``expected_images`` and said loudly,
    once, by rank 0: the number is not the published set's. A count the set does not have is not compared
    (``_counts``): ReaL's is absent when the val files carry no ReaL labels."""
    import torch.distributed as dist

    short = []
    for key, known in expected.items():
        short += [(f"{name}{'/' + where if where else ''} {key}", n, known)
                  for where, n in _counts(metrics.get(key)) if n != known]
    if not short:
        return
    metrics["expected_images"] = {key: known for key, known in expected.items() if _counts(metrics.get(key))}
    if not dist.is_initialized() or dist.get_rank() == 0:
        for what, n, known in short:
            print(f"[gsam] WARNING: {what}: {n:,} images scored, the published set has {known:,}; this number is "
                  "not comparable with the paper's (see the skipped files above)", flush=True)
