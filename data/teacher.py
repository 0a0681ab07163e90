"""A teacher-student image task with clean labels, for the powered study (docs/analysis.md §6.4; issue 30 item 8).
Nothing is downloaded: every image and label comes from one seed, and the trainer reads it (``data.loader: memory``).

- Inputs: smooth random RGB images, ``image_size`` pixels square: white Gaussian noise blurred by a Gaussian of
  ``blur`` pixels (circular, so every pixel has the same statistics), scaled to 128 + 48 z and rounded to uint8.
  Smooth fields give the patches local structure for a patch model to pick up, as natural images do.
- Labels: a fixed random teacher network (``Teacher``: patch embedding, one self-attention layer and one tanh MLP,
  float64, weights drawn from the seed) scores the uint8 image exactly as the trainer sees it (``teacher_input``:
  torchvision's ToTensor and Normalize(0.5, 0.5)). The label is the argmax of the scores of the image and of its
  mirror image, so the loader's random horizontal flip never changes a label; there is no crop (a crop would).
  Per-class offsets, fixed on a calibration draw, make the classes about equally likely; rejection then makes every
  split exactly balanced.
- Splits: ``train``, ``minival`` and ``val`` (the test set), each drawn from its own stream of the seed, so a
  split's images do not depend on the other splits' sizes. Every label is the teacher's: no noise anywhere.

``write_teacher_dataset(root, ...)`` writes ``root/teacher.npz`` (uint8 images and labels of each split, 33 MB at
the study's sizes) and ``root/teacher.json`` (the parameters, the sizes and the teacher's offsets); a second call
with the same parameters returns at once. ``build_memory_loaders`` serves it to the trainer from memory: the folder
loader's PIL pipeline costs 0.65 ms an image on this CPU (150 ms of a 256-image batch, against about 190 ms for a
sharpness-aware step of the study's ViT), the arrays a few ms a batch (data_wait ~1% of a step).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

VERSION = 1
SPLITS = ("train", "minival", "val")
# the streams of the seed: the teacher's weights use the seed itself, the class offsets seed x 1000 + 99 and split k
# (train, minival, val) seed x 1000 + 100 + k (the study's design explored on streams 0-2, which no split uses)
_CALIBRATION_STREAM = 99
_SPLIT_STREAM = 100


@dataclass(frozen=True)
class TaskSpec:
    """What fixes the task: the seed, the image and the teacher. The split sizes are arguments of their own."""
    seed: int = 0
    num_classes: int = 10
    image_size: int = 16
    blur: float = 1.0       # pixels: the smoothness of the inputs
    patch: int = 4          # the teacher's patches (the student's too, configs/model/powered_vit.yaml)
    width: int = 64         # the teacher's token width
    gain: float = 1.0       # the teacher's weight scale over 1/sqrt(fan-in): larger is less linear, harder to learn
    calibration: int = 20_000  # images the class offsets are fitted on


def _normal(g: torch.Generator, *shape: int, scale: float) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


class Teacher:
    """scores(x) for x of shape (n, 3, S, S) in [-1, 1]: tokens h = patches E + P; h += softmax(q k^T / sqrt(w)) v;
    h += tanh(h W1) W2; scores = mean over tokens of h, times H. E, q, k, v and W1 N(0, gain^2 / fan-in), W2 and H
    N(0, 1 / fan-in), P N(0, 1)."""

    def __init__(self, spec: TaskSpec):
        g = torch.Generator().manual_seed(spec.seed)
        d, w, t = 3 * spec.patch ** 2, spec.width, (spec.image_size // spec.patch) ** 2
        self.patch, k = spec.patch, spec.gain
        self.embed, self.pos = _normal(g, d, w, scale=k / math.sqrt(d)), _normal(g, t, w, scale=1.0)
        self.q, self.k, self.v = (_normal(g, w, w, scale=k / math.sqrt(w)) for _ in range(3))
        self.fc1 = _normal(g, w, 2 * w, scale=k / math.sqrt(w))
        self.fc2 = _normal(g, 2 * w, w, scale=1 / math.sqrt(2 * w))
        self.head = _normal(g, w, spec.num_classes, scale=1 / math.sqrt(w))

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        n, c, s, _ = x.shape
        p = self.patch
        patches = x.reshape(n, c, s // p, p, s // p, p).permute(0, 2, 4, 1, 3, 5).reshape(n, (s // p) ** 2, c * p * p)
        h = patches @ self.embed + self.pos
        attn = torch.softmax((h @ self.q) @ (h @ self.k).transpose(1, 2) / math.sqrt(h.shape[-1]), dim=-1)
        h = h + attn @ (h @ self.v)
        h = h + torch.tanh(h @ self.fc1) @ self.fc2
        return h.mean(dim=1) @ self.head

    def symmetric_scores(self, x: torch.Tensor) -> torch.Tensor:
        """The scores of the image plus those of its mirror image: a function the flip leaves unchanged."""
        return self.scores(x) + self.scores(x.flip(-1))


def smooth_images(g: torch.Generator, n: int, spec: TaskSpec) -> np.ndarray:
    """n uint8 images (n, S, S, 3): blurred white noise (circular Gaussian of ``spec.blur`` px, unit variance)."""
    s = spec.image_size
    z = torch.randn(n, 3, s, s, generator=g, dtype=torch.float64)
    if spec.blur > 0:
        d = torch.arange(s, dtype=torch.float64)
        d = torch.minimum(d, s - d)  # circular distance
        k = torch.exp(-0.5 * (d / spec.blur) ** 2)
        k = k / k.square().sum().sqrt()  # unit variance after the 2-D (separable) convolution
        kf = torch.fft.fft(k)
        z = torch.fft.ifft2(torch.fft.fft2(z) * (kf[:, None] * kf[None, :])).real
    return (128 + 48 * z).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def teacher_input(images: np.ndarray) -> torch.Tensor:
    """uint8 (n, S, S, 3) -> float64 (n, 3, S, S) in [-1, 1]: the trainer's ToTensor and Normalize(0.5, 0.5)."""
    return (torch.from_numpy(images).permute(0, 3, 1, 2).to(torch.float64) / 255.0 - 0.5) / 0.5


def class_offsets(teacher: Teacher, spec: TaskSpec, iters: int = 200) -> np.ndarray:
    """Offsets b subtracted from the scores so that argmax(scores - b) is about uniform over the classes on a
    calibration draw (a fixed-point iteration on the class frequencies); rejection then balances exactly."""
    n = spec.calibration
    g = torch.Generator().manual_seed(spec.seed * 1000 + _CALIBRATION_STREAM)
    scores = teacher.symmetric_scores(teacher_input(smooth_images(g, n, spec))).numpy()
    b = np.zeros(spec.num_classes)
    step = 0.5 * scores.std()
    for _ in range(iters):
        freq = np.bincount((scores - b).argmax(1), minlength=spec.num_classes) / n
        b += step * (freq - 1.0 / spec.num_classes)
    return b


def balanced_split(teacher: Teacher, offsets: np.ndarray, spec: TaskSpec, stream: int,
                   per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) with exactly ``per_class`` images of each class, in the order the stream drew them:
    chunks of the split's own stream (about 4 x the split, 256 to 4,096 images), each image kept while its class
    still needs images."""
    g = torch.Generator().manual_seed(spec.seed * 1000 + _SPLIT_STREAM + stream)
    chunk = min(max(4 * per_class * spec.num_classes, 256), 4096)
    need = np.full(spec.num_classes, per_class)
    kept_x, kept_y = [], []
    for tries in range(1001):
        if not need.any():
            break
        if tries == 1000:
            raise RuntimeError(f"teacher task: class(es) {np.flatnonzero(need).tolist()} too rare to fill {per_class}")
        x = smooth_images(g, chunk, spec)
        y = (teacher.symmetric_scores(teacher_input(x)).numpy() - offsets).argmax(1)
        for i, c in enumerate(y):
            if need[c]:
                need[c] -= 1
                kept_x.append(x[i])
                kept_y.append(c)
    return np.stack(kept_x), np.array(kept_y)




def write_teacher_dataset(root: str | Path, *, train: int = 2_560, minival: int = 10_000, val: int = 30_000,
                          spec: TaskSpec = TaskSpec()) -> Path:
    """Write the three splits into ``root/teacher.npz``; each size must be a positive multiple of the class count
    (exact balance). A folder already holding this task is left as it is; another task there is replaced."""
    root, sizes = Path(root), {"train": int(train), "minival": int(minival), "val": int(val)}
    for name, n in sizes.items():
        if n <= 0 or n % spec.num_classes:
            raise ValueError(f"data.teacher.{name}={n}: must be a positive multiple of num_classes={spec.num_classes}")
    stamp, meta = root / "teacher.json", {"version": VERSION, **asdict(spec), "sizes": sizes}
    if (root / "teacher.npz").is_file() and stamp.is_file() and _stamped(stamp, meta):
        return root
    teacher = Teacher(spec)
    offsets = class_offsets(teacher, spec)
    arrays = {}
    for stream, split in enumerate(SPLITS):
        arrays[f"{split}_x"], arrays[f"{split}_y"] = balanced_split(teacher, offsets, spec, stream,
                                                                    sizes[split] // spec.num_classes)
    root.mkdir(parents=True, exist_ok=True)
    part = root / f"teacher.{os.getpid()}.npz"  # then renamed: two runs writing at once never leave half a file
    np.savez(part, **arrays)
    os.replace(part, root / "teacher.npz")
    stamp.write_text(json.dumps({**meta, "offsets": offsets.tolist()}, indent=1))
    return root


def _stamped(stamp: Path, meta: dict) -> bool:
    try:
        old = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return False
    return {k: old.get(k) for k in meta} == meta


def read_split(root: str | Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 images (n, S, S, 3), int64 labels (n,)) of one split of ``root/teacher.npz``; a missing file or split
    is one line naming it."""
    path = Path(root) / "teacher.npz"
    if not path.is_file():
        raise FileNotFoundError(f"data.root={root}: no teacher.npz there (train.py writes it from data.teacher on "
                                "first use; or gsam.data.teacher.write_teacher_dataset)")
    with np.load(path) as f:
        if f"{split}_x" not in f:
            raise ValueError(f"data.root={root}: teacher.npz has no split {split!r} (it has {', '.join(SPLITS)})")
        return torch.from_numpy(f[f"{split}_x"]), torch.from_numpy(f[f"{split}_y"]).long()


class MemoryLoader:
    """Batches of one split from memory, as the folder loader gives them: a ``ShardSampler`` (the same order for a
    seed, ``.sampler.set_epoch(epoch, start_batch)`` to resume inside an epoch), images normalised as ToTensor and
    Normalize(mean, std) do, and in training a horizontal flip of each image with probability 1/2 drawn from (seed,
    epoch, image index) alone, so a resumed run and any batch split see the same flips. Yields (x, y), or (x, y,
    index) for evaluation."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, *, train: bool, batch: int, mean, std, rank: int,
                 world: int, seed: int):
        from .folder import ShardSampler

        self.images, self.labels, self.train, self.batch, self.seed = images, labels, train, batch, seed
        self.sampler = ShardSampler(len(images), rank=rank, world=world, shuffle=train, seed=seed, batch=batch,
                                    drop_last=train)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch if self.train else math.ceil(n / self.batch)

    def _flips(self) -> torch.Tensor:
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.sampler.epoch) * 10_000_019 + 1)
        return torch.rand(len(self.images), generator=g) < 0.5

    def __iter__(self):
        order = torch.as_tensor(list(self.sampler), dtype=torch.long)
        flips = self._flips() if self.train else None
        for b in range(len(self)):
            idx = order[b * self.batch:(b + 1) * self.batch]
            x = self.images[idx].permute(0, 3, 1, 2).float().div(255)
            if flips is not None:
                x = torch.where(flips[idx].view(-1, 1, 1, 1), x.flip(-1), x)
            x = ((x - self.mean) / self.std).contiguous()
            yield (x, self.labels[idx]) if self.train else (x, self.labels[idx], idx)


def build_memory_loaders(*, root: str, train_split: str, val_split: str | None, img_size: int, batch: int,
                         eval_batch: int, mean, std, rank: int, world: int, seed: int, **_folder_only):
    """(train loader, {"val": the ``val_split`` loader}, classes, {"val": a name per image}), as
    ``build_folder_loaders`` returns them. The folder loader's crop and worker options (``_folder_only``) do not
    apply: the images are served as stored, at their own size, which must be data.img_size."""
    x, y = read_split(root, train_split)
    if x.shape[1] != img_size:
        raise ValueError(f"data.img_size={img_size}: the images of {root}/teacher.npz are {x.shape[1]} px")
    train = MemoryLoader(x, y, train=True, batch=batch, mean=mean, std=std, rank=rank, world=world, seed=seed)
    if len(train.sampler) < batch:
        raise ValueError(f"data.batch_size: {batch * world} is larger than the training set ({len(x)} images)")
    classes = [f"class_{k}" for k in range(int(y.max()) + 1)]
    evals, files = {}, {}
    if val_split:
        vx, vy = read_split(root, val_split)
        evals["val"] = MemoryLoader(vx, vy, train=False, batch=eval_batch, mean=mean, std=std, rank=rank,
                                    world=world, seed=0)
        files["val"] = [f"{val_split}/{i:06d}" for i in range(len(vx))]
    return train, evals, classes, files


def write_task(root: str | Path, teacher, *, num_classes: int, image_size: int) -> Path:
    """``write_teacher_dataset`` from the data config's ``teacher`` section (seed, gain, blur, calibration and the three
    sizes)."""
    spec = TaskSpec(seed=int(teacher.seed), num_classes=num_classes, image_size=image_size, blur=float(teacher.blur),
                    gain=float(teacher.gain), calibration=int(teacher.calibration))
    return write_teacher_dataset(root, train=teacher.train, minival=teacher.minival, val=teacher.val, spec=spec)
