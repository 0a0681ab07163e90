"""The metrics of Table 1's evaluation sets behind one interface: ``evaluator(model) -> {metric: value}``;
``gsam/evaluation/sets.py`` builds them from ``eval.*``.

- ImageNet val (and the 1% minival): top-1/top-5/loss; ReaL in the same pass when its labels apply.
- ReaL (Beyer et al. 2020): over the val images whose label list is non-empty, a hit when the top-1
  class is in the list.
- ImageNet-V2 (Recht et al. 2019): top-1/top-5 on the class-index folders.
- ImageNet-R (Hendrycks et al. 2021), 200 classes, two numbers from one pass: ``top1_masked``, the argmax over
  the 200 classes' logits only (the dataset's own protocol, as hendrycks/imagenet-r and timm), and
  ``top1_all``, the argmax over all 1000 classes, which is what Table 1's R column most likely is
  (docs/data.md: timm's masked R of the paper's SAM checkpoints is far above Table 1's).
- ImageNet-C (Hendrycks & Dietterich 2019): top-1 per (corruption, severity); the mean accuracy over the
  15 benchmark corruptions and over all 19; mCE over the 15, normalised by AlexNet's errors.

Every metric is a sum over images, all-reduced across ranks at the end; the shard samplers never pad,
so each image counts exactly once.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from gsam.distributed import all_reduce_sum

# The 15 benchmark corruptions and the 4 held-out ones, with AlexNet's top-1 error averaged over the 5
# severities: the normalisers of mCE (Hendrycks & Dietterich, ICLR 2019; hendrycks/robustness ImageNet-C).
ALEXNET_ERROR = {
    "gaussian_noise": 0.886428, "shot_noise": 0.894468, "impulse_noise": 0.922640, "defocus_blur": 0.819880,
    "glass_blur": 0.826268, "motion_blur": 0.785948, "zoom_blur": 0.798360, "snow": 0.866816, "frost": 0.826572,
    "fog": 0.819324, "brightness": 0.564592, "contrast": 0.853204, "elastic_transform": 0.646056,
    "pixelate": 0.717840, "jpeg_compression": 0.606500,
}
EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
BENCHMARK_CORRUPTIONS = tuple(ALEXNET_ERROR)
SEVERITIES = (1, 2, 3, 4, 5)


@torch.no_grad()
def accumulate(model, loader, score: Callable, size: int, device: torch.device, amp_dtype,
               channels_last: bool = False, on_batch: Callable[[], None] | None = None) -> torch.Tensor:
    """Sum of ``score(logits, labels, indices) -> tensor[size]`` over the loader and all ranks.

    The loader yields (x, y, record indices) or (x, y) (then ``idx`` is None), or None for a batch whose
    images were all unreadable. The model is in eval mode during the pass and restored afterwards.
    ``on_batch`` is called after every batch (a progress bar).
    """
    was_training = model.training
    model.eval()
    sums = torch.zeros(size, dtype=torch.float64, device=device)
    for batch in loader:
        if batch is not None:  # None: every image of the batch was unreadable
            x, y, idx = batch if len(batch) == 3 else (*batch, None)
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                logits = model(x).float()
            sums += score(logits, y, None if idx is None else idx.to(device))
        if on_batch is not None:
            on_batch()
    model.train(was_training)
    return all_reduce_sum(sums)


def topk_score(loss_fn: Callable | None = None) -> Callable:
    """Per batch: [top-1 hits, top-5 hits, summed loss, images]."""
    def score(logits, y, idx):
        top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
        loss = loss_fn(logits, y).double() * y.shape[0] if loss_fn is not None else logits.new_zeros((), dtype=torch.float64)
        return torch.stack([(top5[:, 0] == y).sum().double(), (top5 == y[:, None]).any(1).sum().double(), loss,
                            torch.tensor(float(y.shape[0]), dtype=torch.float64, device=y.device)])
    return score


def real_score(real_targets: torch.Tensor) -> Callable:
    """Per batch: [ReaL hits, images with a non-empty label list]. ``real_targets``: (records, max labels),
    -1 padded; row i holds the ReaL labels of record i."""
    def score(logits, y, idx):
        targets = real_targets.to(logits.device)[idx]
        valid = targets[:, 0] >= 0
        hit = (targets == logits.argmax(1, keepdim=True)).any(1) & valid
        return torch.stack([hit.sum().double(), valid.sum().double()])
    return score


def subset_score(class_indices: list[int]) -> Callable:
    """Per batch on a class subset (ImageNet-R/-A; the labels are positions within the subset):
    [hits of the argmax over ``class_indices`` only, hits of the argmax over all classes, images]."""
    cols = torch.as_tensor(class_indices)

    def score(logits, y, idx):
        c = cols.to(logits.device)
        masked = logits[:, c].argmax(1) == y
        every_class = logits.argmax(1) == c[y]
        return torch.stack([masked.sum().double(), every_class.sum().double(),
                            torch.tensor(float(y.shape[0]), dtype=torch.float64, device=y.device)])
    return score


def _percent(hits: float, n: float) -> float:
    return 100.0 * hits / n if n else float("nan")


class ClassificationEvaluator:
    """Top-1/top-5 (and loss) on a labelled set; optionally ReaL from the same forward passes."""

    def __init__(self, name: str, loader, *, loss_fn=None, real_targets: torch.Tensor | None = None):
        self.name, self.loader, self.loss_fn, self.real_targets = name, loader, loss_fn, real_targets

    @property
    def batches(self) -> int:
        return len(self.loader)

    def __call__(self, model, device, amp_dtype, channels_last=False, on_batch=None) -> dict:
        scores = [topk_score(self.loss_fn)] + ([real_score(self.real_targets)] if self.real_targets is not None else [])
        def score(logits, y, idx):
            return torch.cat([s(logits, y, idx) for s in scores])
        s = accumulate(model, self.loader, score, 4 + 2 * (len(scores) - 1), device, amp_dtype, channels_last,
                       on_batch).tolist()
        n = s[3]
        out = {"top1": _percent(s[0], n), "top5": _percent(s[1], n), "images": int(n)}
        if self.loss_fn is not None:
            out["loss"] = s[2] / n if n else float("nan")
        if self.real_targets is not None:
            out["real_top1"], out["real_images"] = _percent(s[4], s[5]), int(s[5])
        return out


class SubsetEvaluator:
    """ImageNet-R style, a class subset: ``top1_masked`` (logits restricted to the subset) and ``top1_all``
    (argmax over every class the model has)."""

    def __init__(self, name: str, loader, class_indices: list[int]):
        self.name, self.loader, self.class_indices = name, loader, class_indices

    @property
    def batches(self) -> int:
        return len(self.loader)

    def __call__(self, model, device, amp_dtype, channels_last=False, on_batch=None) -> dict:
        masked, every_class, n = accumulate(model, self.loader, subset_score(self.class_indices), 3, device,
                                            amp_dtype, channels_last, on_batch).tolist()
        return {"top1_masked": _percent(masked, n), "top1_all": _percent(every_class, n), "images": int(n),
                "classes": len(self.class_indices)}


def corruption_summary(top1: dict[str, dict[int, float]]) -> dict:
    """Aggregates per-(corruption, severity) top-1 accuracy (%).

    ``mean15`` / ``mean19``: mean accuracy over the 15 benchmark / all 19 corruptions x 5 severities, present
    only when every one of those cells was measured; ``mce15``: mean over the 15 of
    CE_c = mean_s err(c, s) / AlexNet's mean error on c, in percent (Hendrycks & Dietterich 2019, Eq. 1
    with the severity sums written as means).
    """
    def complete(names):
        return all(c in top1 and all(s in top1[c] for s in SEVERITIES) for c in names)

    def mean_acc(names):
        return sum(top1[c][s] for c in names for s in SEVERITIES) / (len(names) * len(SEVERITIES))

    out = {"per_corruption": {c: {str(s): v for s, v in sorted(sev.items())} for c, sev in sorted(top1.items())},
           "corruption_mean": {c: sum(sev.values()) / len(sev) for c, sev in sorted(top1.items())}}
    if complete(BENCHMARK_CORRUPTIONS):
        out["mean15"] = mean_acc(BENCHMARK_CORRUPTIONS)
        out["mce15"] = 100.0 * sum(
            sum(1 - top1[c][s] / 100 for s in SEVERITIES) / len(SEVERITIES) / ALEXNET_ERROR[c]
            for c in BENCHMARK_CORRUPTIONS) / len(BENCHMARK_CORRUPTIONS)
    all19 = BENCHMARK_CORRUPTIONS + EXTRA_CORRUPTIONS
    if complete(all19):
        out["mean19"] = mean_acc(all19)
    cells = [v for sev in top1.values() for v in sev.values()]
    out["mean_found"] = sum(cells) / len(cells) if cells else float("nan")
    out["top1"] = out.get("mean19", out.get("mean15", out["mean_found"]))
    return out


class CorruptionEvaluator:
    """ImageNet-C: one top-1 per (corruption, severity) loader, then ``corruption_summary``."""

    def __init__(self, name: str, loaders: dict[str, dict[int, object]]):
        self.name, self.loaders = name, loaders

    @property
    def batches(self) -> int:
        return sum(len(loader) for sev in self.loaders.values() for loader in sev.values())

    def __call__(self, model, device, amp_dtype, channels_last=False, on_batch=None) -> dict:
        top1, images = {}, {}
        for c, sev in self.loaders.items():
            for s, loader in sev.items():
                hits = accumulate(model, loader, topk_score(), 4, device, amp_dtype, channels_last, on_batch)
                top1.setdefault(c, {})[s] = _percent(hits[0].item(), hits[3].item())
                images.setdefault(c, {})[s] = int(hits[3].item())
        return {**corruption_summary(top1), "images": images}
