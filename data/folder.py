"""Image-folder loaders (torchvision ``ImageFolder`` + PIL) with the recipes' transforms.

Train: Inception-style random-resized crop (area scale 0.08-1) + horizontal flip. Eval: resize the short
side to ``img_size / crop_pct`` (crop_pct = 224/256 by default) and centre-crop ``img_size``.
Augmentation is a pure function of (seed, epoch, sample index): each sample seeds the transform's
RNG, so results do not depend on the number of workers and a run resumed mid-epoch sees exactly
the crops of the uninterrupted run. The minival split is a fixed, seed-independent 1% of train
(a permutation with its own generator, seed 0), held out as in big_vision's ``train[99%:]``.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset
from torchvision import datasets, transforms

MINIVAL_SEED = 0


def train_transform(img_size: int, mean, std, min_scale: float = 0.08):
    return transforms.Compose([
        transforms.RandomResizedCrop(img_size, scale=(min_scale, 1.0), interpolation=transforms.InterpolationMode.BILINEAR),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])


def eval_transform(img_size: int, mean, std, crop_pct: float = 224 / 256):
    return transforms.Compose([
        transforms.Resize(int(math.floor(img_size / crop_pct)), interpolation=transforms.InterpolationMode.BILINEAR),
        transforms.CenterCrop(img_size),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])


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
            torch.manual_seed((self.seed * 1_000_003 + epoch) * 10_000_019 + i)
            return self.transform(image), label


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


def _image_folder(root: Path, key: str) -> datasets.ImageFolder:
    if not root.is_dir():
        raise FileNotFoundError(f"{key}: no such directory: {root}")
    return datasets.ImageFolder(str(root))


def build_folder_loaders(*, root: str, train_split: str, val_split: str | None, img_size: int, mean, std,
                         batch: int, eval_batch: int, num_workers: int, rank: int, world: int, seed: int,
                         minival_fraction: float, crop_pct: float = 224 / 256, min_crop_scale: float = 0.08):
    """Returns (train loader, {name: eval loader}, number of classes). ``batch`` is per rank."""
    root = Path(root)
    train_base = _image_folder(root / train_split, "data.root")
    train_idx, minival_idx = split_minival(len(train_base), minival_fraction)
    train_set = SeededTransforms(Subset(train_base, train_idx), train_transform(img_size, mean, std, min_crop_scale), seed)
    sampler = ShardSampler(len(train_set), rank=rank, world=world, shuffle=True, seed=seed, batch=batch,
                           drop_last=True, with_epoch=True)
    if len(sampler) < batch:
        raise ValueError(f"data.batch_size: {batch * world} is larger than the training set ({len(train_set)} images)")
    common = dict(num_workers=num_workers, pin_memory=torch.cuda.is_available(),
                  persistent_workers=num_workers > 0)
    train = DataLoader(train_set, batch_size=batch, sampler=sampler, drop_last=True, **common)
    evals = {}
    eval_tf = eval_transform(img_size, mean, std, crop_pct)
    sets = {}
    if minival_idx:
        sets["minival"] = Subset(datasets.ImageFolder(str(root / train_split), transform=eval_tf), minival_idx)
    if val_split:
        val = _image_folder(root / val_split, "data.val_split")
        val.transform = eval_tf
        if val.classes != train_base.classes:
            raise ValueError(f"data.val_split: class folders of {root / val_split} differ from {root / train_split}")
        sets["val"] = val
    for name, ds in sets.items():
        s = ShardSampler(len(ds), rank=rank, world=world, shuffle=False, seed=0, batch=eval_batch, drop_last=False)
        evals[name] = DataLoader(ds, batch_size=eval_batch, sampler=s, **common)
    return train, evals, len(train_base.classes)
