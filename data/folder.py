"""Image-folder loaders (PIL + torchvision transforms) with the recipes' transforms.

Train: Inception-style random-resized crop (area scale ``min_crop_scale``-1; 0.05 as big_vision's
``inception_crop(area_min=5)`` in the Table 1 recipe) + horizontal flip. Eval: resize the short
side to ``img_size / crop_pct`` (crop_pct = 224/256 by default) and centre-crop ``img_size``.
Augmentation is a pure function of (seed, epoch, sample index): each sample seeds the transform's
RNG, so results do not depend on the number of workers and a run resumed mid-epoch sees exactly
the crops of the uninterrupted run. The minival split is a fixed, seed-independent 1% of train
(a permutation with its own generator, seed 0), held out as in big_vision's ``train[99%:]``.
"""
from __future__ import annotations

import math
import signal
import warnings
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler, Subset, default_collate
from torchvision import transforms

from .sources import class_folders, folder_samples, rgb, val_samples

MINIVAL_SEED = 0


def train_transform(img_size: int, mean, std, min_scale: float = 0.05):
    return transforms.Compose([
        transforms.RandomResizedCrop(img_size, scale=(min_scale, 1.0), interpolation=transforms.InterpolationMode.BILINEAR),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])


def eval_transform(img_size: int, mean, std, crop_pct: float = 224 / 256, resize: bool = True):
    """Resize the short side to ``img_size / crop_pct``, centre-crop ``img_size``; ``resize=False`` only crops
    (ImageNet-C's images are already the 224 crops)."""
    return transforms.Compose([
        *([transforms.Resize(int(math.floor(img_size / crop_pct)), interpolation=transforms.InterpolationMode.BILINEAR)]
          if resize else []),
        transforms.CenterCrop(img_size),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])


class ImageList(Dataset):
    """Item i: (PIL RGB image, label) of ``samples[i]``. An unreadable file is reported by path; training
    (``substitute``) then takes the next readable sample, so one bad file among 1.28M does not end a run,
    while evaluation gets None and the batch drops it (``collate_skipping_none``)."""

    def __init__(self, samples: list[tuple[str, int]], substitute: bool):
        self.samples, self.substitute, self._reported = samples, substitute, set()

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, i: int):
        path, label = self.samples[i]
        try:
            with Image.open(path) as im:
                return rgb(im), label
        except Exception as e:  # any decoder error (truncated, corrupt, unknown, a decompression bomb): as write_betons
            if path not in self._reported:
                self._reported.add(path)
                warnings.warn(f"unreadable image skipped: {path} ({type(e).__name__}: {e})", stacklevel=2)
            return None

    def __getitem__(self, i: int):
        for k in range(len(self.samples) if self.substitute else 1):
            item = self._load((i + k) % len(self.samples))
            if item is not None:
                return item
        if self.substitute:
            raise RuntimeError("no readable image in the training set")
        return None


class SeededTransforms(Dataset):
    """Item ``(index, epoch)``: ``transform`` applied with the torch RNG seeded from (seed, epoch,
    index). The epoch travels with the index, so persistent workers need no update."""

    def __init__(self, base: Dataset, transform, seed: int):
        self.base, self.transform, self.seed = base, transform, seed

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key):
        i, epoch = key
        image, label = self.base[i]
        with torch.random.fork_rng(devices=[]):
            # The CPU generator only: torch.manual_seed also queues a lazy CUDA/XPU reseed, which on
            # a CUDA build records a stack trace every call (~1 ms per image in the trainer).
            torch.default_generator.manual_seed((self.seed * 1_000_003 + epoch) * 10_000_019 + i)
            return self.transform(image), label


class IndexedEval(Dataset):
    """Item i: (transformed image, label, i), or None when the file is unreadable."""

    def __init__(self, samples: list[tuple[str, int]], transform):
        self.images, self.transform = ImageList(samples, substitute=False), transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        item = self.images[i]
        return None if item is None else (self.transform(item[0]), item[1], i)


def collate_skipping_none(batch):
    """default_collate without the unreadable images; None when none is left (the evaluators skip it)."""
    batch = [b for b in batch if b is not None]
    return default_collate(batch) if batch else None


class ShardSampler(Sampler[int]):
    """Rank ``rank``'s disjoint shard of a seeded permutation per epoch, starting at ``start``.

    ``drop_last`` trims to a multiple of ``world * batch`` so every rank runs the same number of
    full steps. Evaluation uses shuffle=False, drop_last=False: every sample exactly once overall.
    """

    def __init__(self, n: int, *, rank: int, world: int, shuffle: bool, seed: int, batch: int, drop_last: bool,
                 with_epoch: bool = False):
        self.n, self.rank, self.world, self.shuffle, self.seed = n, rank, world, shuffle, seed
        self.batch, self.drop_last, self.with_epoch, self.epoch, self.start = batch, drop_last, with_epoch, 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start = epoch, start_batch * self.batch

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        if self.drop_last:
            order = order[: len(order) // (self.world * self.batch) * self.world * self.batch]
        return order[self.rank::self.world]

    def __iter__(self):
        indices = self._indices()[self.start:]
        return iter([(i, self.epoch) for i in indices] if self.with_epoch else indices)

    def __len__(self) -> int:
        return max(len(self._indices()) - self.start, 0)


def split_minival(n: int, fraction: float) -> tuple[list[int], list[int]]:
    """(train indices, minival indices): a fixed permutation, the first ``fraction`` held out."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"data.minival_fraction must be in [0, 1), got {fraction}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(MINIVAL_SEED)).tolist()
    k = int(round(n * fraction))
    return sorted(order[k:]), sorted(order[:k])


def private_generator(seed: int) -> torch.Generator:
    """A DataLoader draws one int64 (its workers' base seed) each time an iterator is made; from its own
    generator, not the global one, so that making the epoch's iterator again after a resume leaves the training
    stream (dropout, drop-path) where the checkpoint found it. The transforms are seeded per sample, so this
    seed changes no image."""
    return torch.Generator().manual_seed(seed)


def ignore_stop_signals(_worker_id: int) -> None:
    """A DataLoader worker's first act. Slurm signals the whole process group (TERM at preemption, USR2 before
    a time limit) and a terminal's Ctrl-C and hang-up reach it too: a worker killed by one ends the main process with
    "DataLoader worker exited unexpectedly" before it can checkpoint. The main process handles them and ends
    its workers itself."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)


def eval_loader(samples: list[tuple[str, int]], transform, *, batch: int, num_workers: int, rank: int,
                world: int) -> DataLoader:
    """This rank's unpadded shard of ``samples``; yields (x, y, sample index)."""
    s = ShardSampler(len(samples), rank=rank, world=world, shuffle=False, seed=0, batch=batch, drop_last=False)
    return DataLoader(IndexedEval(samples, transform), batch_size=batch, sampler=s, collate_fn=collate_skipping_none,
                      num_workers=num_workers, pin_memory=torch.cuda.is_available(), persistent_workers=False,
                      generator=private_generator(rank), worker_init_fn=ignore_stop_signals)


def check_val_classes(samples: list[tuple[str, int]], classes: list[str], folder: Path, allow_partial: bool,
                      notice=print) -> None:
    """Every training class has images in val: top-1 over the classes present only is another number (ImageNet's
    sets are also checked by their published counts, gsam/evaluation/sets.py; this is for any set). ValueError
    naming the folder, or with ``allow_partial`` one warning line."""
    missing = sorted(set(range(len(classes))) - {label for _, label in samples})
    if not missing:
        return
    what = (f"data.root: {folder} has no image of {len(missing)} of the {len(classes)} classes "
            f"({', '.join(classes[i] for i in missing[:3])}{' ...' if len(missing) > 3 else ''})")
    if not allow_partial:
        raise ValueError(f"{what}; val would be scored on the classes present only: complete it, or set "
                         "eval.allow_partial=true to score it as it is")
    if notice is not None:
        notice(f"[gsam] WARNING: {what}; scored on the classes present (eval.allow_partial=true)")


def build_folder_loaders(*, root: str, train_split: str, val_split: str | None, img_size: int, mean, std,
                         batch: int, eval_batch: int, num_workers: int, rank: int, world: int, seed: int,
                         minival_fraction: float, crop_pct: float = 224 / 256, min_crop_scale: float = 0.05,
                         val_labels: str | None = None, allow_partial: bool = False):
    """Returns (train loader, {name: eval loader}, classes, {name: files}). ``batch`` is per rank.
    ``allow_partial`` (eval.allow_partial): a val without images of some classes is scored (with a warning)
    instead of refused."""
    root = Path(root)
    classes = class_folders(root / train_split, "data.root")
    train_samples = folder_samples(root / train_split, classes, "data.root")
    train_idx, minival_idx = split_minival(len(train_samples), minival_fraction)
    train_set = SeededTransforms(Subset(ImageList(train_samples, substitute=True), train_idx),
                                 train_transform(img_size, mean, std, min_crop_scale), seed)
    sampler = ShardSampler(len(train_set), rank=rank, world=world, shuffle=True, seed=seed, batch=batch,
                           drop_last=True, with_epoch=True)
    if len(sampler) < batch:
        raise ValueError(f"data.batch_size: {batch * world} is larger than the training set ({len(train_set)} images)")
    train = DataLoader(train_set, batch_size=batch, sampler=sampler, drop_last=True, num_workers=num_workers,
                       pin_memory=torch.cuda.is_available(), persistent_workers=num_workers > 0,
                       generator=private_generator(seed * 1000 + rank), worker_init_fn=ignore_stop_signals)
    sets = {}
    if minival_idx:
        sets["minival"] = [train_samples[i] for i in minival_idx]
    if val_split:
        sets["val"] = val_samples(root / val_split, classes, val_labels)
        check_val_classes(sets["val"], classes, root / val_split, allow_partial, notice=print if rank == 0 else None)
    eval_tf = eval_transform(img_size, mean, std, crop_pct)
    evals = {name: eval_loader(samples, eval_tf, batch=eval_batch, num_workers=num_workers, rank=rank, world=world)
             for name, samples in sets.items()}
    return train, evals, classes, {name: [p for p, _ in samples] for name, samples in sets.items()}
