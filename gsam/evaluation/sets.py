"""The evaluation sets of a run: built from ``eval.*`` (ImageNet val/minival with ReaL, V2, R and C), and
measured on a model (``measure_sets``), each set's metrics from ``gsam/evaluation/metrics.py``.

A set whose path is not configured is skipped with a one-line notice; a configured path that does not
exist is an error naming the key (a typo should not silently drop a column of Table 1).
"""
from __future__ import annotations

import json
from importlib.util import find_spec
from pathlib import Path

import torch
from omegaconf import DictConfig

from gsam.data.folder import eval_loader, eval_transform
from gsam.data.sources import corruption_folders, folder_samples, real_index, subset_samples, v2_samples

from gsam.config.checks import ConfigError
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


def check_imagenet_r_classes(class_indices: list[int], classes: list[str]) -> None:
    """For an ImageNet-1k model, the R folders must be ImageNet-R's 200 classes (timm's copy of the list):
    a partial copy would silently change the class subset the logits are restricted to."""
    synsets = _timm_info("imagenet_synsets.txt").read_text().split()
    if classes != synsets:
        return  # not the ImageNet-1k label space (the demo, a subset): the folders define the subset
    expected = set(_timm_info("imagenet_r_synsets.txt").read_text().split())
    found = {classes[i] for i in class_indices}
    if found != expected:
        missing, extra = sorted(expected - found), sorted(found - expected)
        raise ConfigError(f"eval.r: the folders are not ImageNet-R's {len(expected)} classes ({len(missing)} missing, "
                          f"e.g. {missing[:3]}; {len(extra)} not in ImageNet-R, e.g. {extra[:3]})")


# The published sizes of the evaluation sets (ImageNet val; ReaL's labelled images; V2 matched-frequency; R; C per
# corruption and severity). Checked when the label space is ImageNet-1k's, i.e. when the set is the real one.
KNOWN_IMAGES = {"val": 50_000, "real": 46_837, "v2": 10_000, "r": 30_000, "c": 50_000}


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


def real_targets(labels_path: Path, files: list[str]) -> torch.Tensor | None:
    """(records, max labels) int tensor, -1 padded: the ReaL labels of each val record, found by its file
    name (``ILSVRC2012_val_00000001`` is entry 0). None when the files are not named that way."""
    real = json.loads(Path(labels_path).read_text())
    rows = []
    for f in files:
        i = real_index(f)
        if i is None or i >= len(real):
            return None
        rows.append(real[i])
    width = max((len(r) for r in rows), default=1) or 1
    out = torch.full((len(rows), width), -1, dtype=torch.long)
    for k, r in enumerate(rows):
        out[k, :len(r)] = torch.as_tensor(r, dtype=torch.long)
    return out


def _path(cfg: DictConfig, key: str) -> Path | None:
    value = cfg.eval.get(key)
    if value in (None, ""):
        return None
    path = Path(str(value))
    if not path.exists():
        raise ConfigError(f"eval.{key}={value!r}: no such file or directory")
    return path


def build_eval_sets(cfg: DictConfig, *, classes: list[str], loaders: dict, files: dict, loss_fn, mean, std,
                    rank: int, world: int, notice=print) -> dict:
    """{name: evaluator}: ``minival``/``val`` from the data loaders, then ``v2``, ``r``, ``c`` as configured."""
    d = cfg.data
    img_size, batch, workers = int(d.img_size), int(d.eval_batch_size), int(d.num_workers)
    make = dict(batch=batch, num_workers=workers, rank=rank, world=world)
    resize_crop = eval_transform(img_size, mean, std, float(d.crop_pct))
    evaluators = {}
    full = imagenet_1k(classes)
    if full and "val" in loaders:
        check_set_size(f"val ({d.get('root') or d.get('betons')})", len(files["val"]) if files.get("val") else None,
                       KNOWN_IMAGES["val"], cfg)
    for name, loader in loaders.items():
        targets = None
        if name == "val" and cfg.eval.get("real_labels"):
            labels = timm_real_labels() if cfg.eval.real_labels == "timm" else _path(cfg, "real_labels")
            targets = real_targets(labels, files["val"]) if files.get("val") else None
            if targets is None:
                notice("[gsam] eval: real skipped (the val files are not named ILSVRC2012_val_<n>, so they have no "
                       "ReaL labels)")
        evaluators[name] = ClassificationEvaluator(name, loader, loss_fn=loss_fn, real_targets=targets)
        if full and name == "val":
            evaluators[name].expected = {"images": KNOWN_IMAGES["val"], "real_images": KNOWN_IMAGES["real"]}
    if (v2 := _path(cfg, "v2")) is not None:
        samples = v2_samples(v2, len(classes))
        if full:
            check_set_size(f"eval.v2={v2}", len(samples), KNOWN_IMAGES["v2"], cfg)
        evaluators["v2"] = ClassificationEvaluator("v2", eval_loader(samples, resize_crop, **make))
        evaluators["v2"].expected = {"images": KNOWN_IMAGES["v2"]} if full else {}
    if (r := _path(cfg, "r")) is not None:
        samples, cols = subset_samples(r, classes, "eval.r")
        check_imagenet_r_classes(cols, classes)
        if full:
            check_set_size(f"eval.r={r}", len(samples), KNOWN_IMAGES["r"], cfg)
        evaluators["r"] = SubsetEvaluator("r", eval_loader(samples, resize_crop, **make), cols)
        evaluators["r"].expected = {"images": KNOWN_IMAGES["r"]} if full else {}
    if (c := _path(cfg, "c")) is not None:
        found = corruption_folders(c)
        wanted = list(cfg.eval.get("c_corruptions") or found)
        unknown = [w for w in wanted if w not in found]
        if unknown:
            raise ConfigError(f"eval.c_corruptions: {unknown} not found under {c} (found {sorted(found)})")
        odd = [w for w in wanted if w not in BENCHMARK_CORRUPTIONS + EXTRA_CORRUPTIONS]
        if odd:
            notice(f"[gsam] eval: c: {odd} are not ImageNet-C corruptions; they count only in mean_found")
        # ImageNet-C images are already 224x224 centre crops: crop only, no second resize
        crop_only = eval_transform(img_size, mean, std, crop_pct=1.0, resize=False)
        loaders_c = {}
        for w in wanted:
            for sev, folder in found[w].items():
                samples = folder_samples(folder, classes, f"eval.c {w}/{sev}")
                if full:
                    check_set_size(f"eval.c {folder}", len(samples), KNOWN_IMAGES["c"], cfg)
                loaders_c.setdefault(w, {})[sev] = eval_loader(samples, crop_only, **make)
        evaluators["c"] = CorruptionEvaluator("c", loaders_c)
        evaluators["c"].expected = {"images": KNOWN_IMAGES["c"]} if full else {}
    for key in ("v2", "r", "c"):
        if key not in evaluators:
            notice(f"[gsam] eval: {key} skipped (eval.{key} not set)")
    return evaluators


def measure_sets(sets: dict, model, device: torch.device, amp_dtype, channels_last: bool, progress: bool,
                 should_stop=None) -> dict:
    """{set: metrics} of ``model`` on each of ``sets`` ({name: evaluator}). ``progress`` (rank 0 with
    train.progress, as the training bar): a bar per set counting its batches; it stays when it is the only bar
    (evaluate.py) and goes when it sits under the training bar (tqdm's leave=None). ``should_stop`` (every rank
    asks it, before each set): a preemption signal ends the pass there, with the sets measured so far."""
    results = {}
    for name, evaluator in sets.items():
        if should_stop is not None and results and should_stop():
            break
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=evaluator.batches, desc=f"eval {name}", unit="batch", dynamic_ncols=True, leave=None)
        try:
            results[name] = evaluator(model, device, amp_dtype, channels_last,
                                      on_batch=None if bar is None else bar.update)
        finally:
            if bar is not None:
                bar.close()
        check_measured_count(name, results[name], getattr(evaluator, "expected", {}))
    return results


def _counts(images) -> list[tuple[str, int]]:
    """(where, count) of a set's ``images``: one number, or ImageNet-C's {corruption: {severity: n}}."""
    if isinstance(images, dict):
        return [(f"{c}/{s}", n) for c, sev in images.items() for s, n in sev.items()]
    return [("", images)]


def check_measured_count(name: str, metrics: dict, expected: dict) -> None:
    """Every set's metrics hold its image count. Where the set is a published one (``expected``), a count that
    differs (unreadable images skipped, a partial set allowed) is recorded as ``expected_images`` and said loudly,
    once, by rank 0: the number is not the published set's."""
    import torch.distributed as dist

    short = []
    for key, known in expected.items():
        short += [(f"{name}{'/' + where if where else ''} {key}", n, known)
                  for where, n in _counts(metrics.get(key)) if n != known]
    if not short:
        return
    metrics["expected_images"] = {key: known for key, known in expected.items()}
    if not dist.is_initialized() or dist.get_rank() == 0:
        for what, n, known in short:
            print(f"[gsam] WARNING: {what}: {n:,} images scored, the published set has {known:,}; this number is "
                  "not comparable with the paper's (see the skipped files above)", flush=True)
