"""``data.*`` config -> the train loader, the eval loaders, the class list (``data.loader``: ffcv | folder | memory)."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch


@dataclasses.dataclass
class DataParts:
    train: object  # yields (x, y); ``.sampler.set_epoch(epoch, start_batch)``
    evals: dict  # name -> loader yielding (x, y, record index)
    classes: list[str]  # class index -> folder name (wnid)
    files: dict  # name -> file of each eval record (ReaL finds its labels by val file name)


def build_data(d, *, seed: int, rank: int, world: int, is_main: bool, per_rank_batch: int, device: torch.device,
               channels_last: bool, mean, std, barrier=lambda: None, allow_partial: bool = False) -> DataParts:
    """Raises FileNotFoundError/ValueError/ImportError with the key to fix. ``allow_partial``:
    eval.allow_partial (a folder val without some classes is scored, not refused)."""
    if d.loader not in ("ffcv", "folder", "memory"):
        raise ValueError(f"data.loader={d.loader!r}: expected 'ffcv', 'folder' or 'memory'")
    if d.name == "demo":  # the embedded demo writes itself (and its betons) on first use
        from .demo import write_demo_dataset

        if is_main:
            write_demo_dataset(d.root, image_size=int(d.source_size), label_noise=float(d.get("label_noise", 0.0)),
                               minival=bool(d.get("write_minival", False)))
            if d.loader == "ffcv":
                _write_demo_betons(Path(d.root), Path(d.betons))
            if d.get("robustness_root"):
                from .demo_eval import write_demo_eval_sets

                write_demo_eval_sets(d.root, d.robustness_root, int(d.img_size))
        barrier()
    if d.name == "teacher":  # the powered study's teacher-student task writes itself on first use, as the demo
        from .teacher import write_task

        if is_main:
            write_task(d.root, d.teacher, num_classes=int(d.num_classes), image_size=int(d.img_size))
        barrier()
    common = dict(img_size=int(d.img_size), mean=mean, std=std, eval_batch=int(d.eval_batch_size),
                  num_workers=int(d.num_workers), rank=rank, world=world, seed=seed, crop_pct=float(d.crop_pct),
                  min_crop_scale=float(d.min_crop_scale), batch=per_rank_batch)
    if d.loader == "memory":  # arrays read whole into memory (data/teacher.py): no PIL decoding per image
        from .teacher import build_memory_loaders

        return DataParts(*build_memory_loaders(root=d.root, train_split=d.train_split, val_split=d.val_split, **common))
    if d.loader == "ffcv":
        from .ffcv_loaders import build_ffcv_loaders

        return DataParts(*build_ffcv_loaders(betons=d.betons, device=device, channels_last=channels_last,
                                             os_cache=bool(d.os_cache), **common))
    from .folder import build_folder_loaders

    if d.root is None or not Path(d.root).is_dir():
        raise FileNotFoundError(f"data.root={d.root!r}: no such directory (point it at the dataset folder)")
    return DataParts(*build_folder_loaders(root=d.root, train_split=d.train_split, val_split=d.val_split,
                                           minival_fraction=float(d.minival_fraction), val_labels=d.val_labels,
                                           allow_partial=allow_partial, **common))


def _write_demo_betons(root: Path, out: Path) -> None:
    """The demo's betons in ``out``, a folder of the demo's own (data/demo.py: own_folder; a folder of demo
    betons written before the marker: each sidecar's source is a demo data folder), one writer at a time."""
    from .betons import ORIGINAL_PIXELS, read_sidecar, write_beton
    from .demo import own_folder
    from .sources import class_folders, folder_samples
    from .write_guard import lock_out_folder

    def demo_betons(folder: Path) -> bool:
        try:
            sources = [json.loads(p.read_text()).get("source") for p in folder.glob("*.json")]
        except (ValueError, AttributeError, OSError):  # not JSON, or not an object: not a sidecar of ours
            return False
        return bool(sources) and all(isinstance(s, str) and (Path(s) / "demo.json").is_file() for s in sources)

    own_folder(out, "data.betons", legacy=demo_betons)
    if (out / "val.beton").is_file() and read_sidecar(out / "val.beton").get("source") == str(root.resolve()):
        return
    classes = class_folders(root / "train")
    with lock_out_folder(out, "data.betons"):
        for split in ("train", "val"):
            write_beton(out / f"{split}.beton", folder_samples(root / split, classes), classes, **ORIGINAL_PIXELS,
                        workers=2, keep_files=split == "val", progress=False, source=str(root.resolve()))
